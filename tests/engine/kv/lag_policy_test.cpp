// LagPolicy against DESIGN.md section 1 written out here independently:
// scoring vs a double transcription of the formula, visibility vs a mask built
// from the explicit sets, cache contents by counting, selection ties, spec
// parsing and round trips through the spec (config.json and GGUF: lag_policy_io_test).
#include "engine/kv/lag_policy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>


namespace lagserve::kv {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// --- Scoring ------------------------------------------------------------------

// DESIGN.md "Scoring partition p", one line at a time, in double: softmax over
// the L tokens of the Bessel std over channels of the min-max normalised cur.
std::vector<double> transcribed_score_x(const std::vector<float>& cur,
                                        const std::vector<float>& ref, int L, int d,
                                        int stride) {
  std::vector<std::vector<double>> nrm(L, std::vector<double>(d));
  for (int j = 0; j < d; ++j) {
    double mn = ref[j], mx = ref[j];
    for (int i = 0; i < L; ++i) {
      mn = std::min<double>(mn, ref[i * stride + j]);
      mx = std::max<double>(mx, ref[i * stride + j]);
    }
    for (int i = 0; i < L; ++i) nrm[i][j] = (cur[i * stride + j] - mn) / std::max(mx - mn, 1e-6);
  }
  std::vector<double> s(L);
  for (int i = 0; i < L; ++i) {
    double mean = 0;
    for (int j = 0; j < d; ++j) mean += nrm[i][j] / d;
    double var = 0;
    for (int j = 0; j < d; ++j) var += (nrm[i][j] - mean) * (nrm[i][j] - mean) / (d - 1);
    s[i] = std::sqrt(var);
  }
  double total = 0, mx = s[0];
  for (int i = 0; i < L; ++i) mx = std::max(mx, s[i]);
  for (int i = 0; i < L; ++i) total += std::exp(s[i] - mx);
  for (int i = 0; i < L; ++i) s[i] = std::exp(s[i] - mx) / total;
  return s;
}

struct Partition {
  int L, d, stride;
  std::vector<float> ck, rk, cv, rv;  // L rows of `stride` floats; NaN past d

  Partition(int L_, int d_, std::mt19937& rng) : L(L_), d(d_), stride(d_ + 3) {
    std::normal_distribution<float> nd(0.f, 1.f);
    for (auto* x : {&ck, &rk, &cv, &rv}) {
      x->assign(static_cast<size_t>(L) * stride, kNaN);
      for (int i = 0; i < L; ++i)
        for (int j = 0; j < d; ++j) (*x)[i * stride + j] = nd(rng);
    }
  }
  float& at(std::vector<float>& x, int i, int j) { return x[i * stride + j]; }
  std::vector<float> scores(float w) const {
    return lag_scores(ck.data(), rk.data(), cv.data(), rv.data(), L, d, stride, w);
  }
  std::vector<double> expected(double w) const {
    const std::vector<double> k = transcribed_score_x(ck, rk, L, d, stride);
    const std::vector<double> v = transcribed_score_x(cv, rv, L, d, stride);
    std::vector<double> s(L);
    for (int i = 0; i < L; ++i) s[i] = k[i] + w * v[i];
    return s;
  }
};

// Selected by its definition: i is kept iff fewer than k offsets beat it
// (a higher score, or an equal score at a lower offset).
std::vector<int32_t> brute_select(const std::vector<float>& s, int k) {
  std::vector<int32_t> kept;
  for (int i = 0; i < static_cast<int>(s.size()); ++i) {
    int beaten_by = 0;
    for (int j = 0; j < static_cast<int>(s.size()); ++j)
      beaten_by += s[j] > s[i] || (s[j] == s[i] && j < i);
    if (beaten_by < k) kept.push_back(i);
  }
  return kept;
}

void expect_scores_match(const Partition& p, float w, double abs_tol = 0) {
  const std::vector<float> got = p.scores(w);
  const std::vector<double> want = p.expected(w);
  ASSERT_EQ(static_cast<int>(got.size()), p.L);
  for (int i = 0; i < p.L; ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-5 * std::abs(want[i]) + 1e-9 + abs_tol)
        << "L=" << p.L << " d=" << p.d << " i=" << i;
  }
  for (int k : {1, std::max(1, p.L / 4), p.L}) {
    const std::vector<int32_t> sel = lag_select(got, k);
    ASSERT_EQ(sel, brute_select(got, k)) << "k=" << k;
    // Against the exact scores: nothing left out beats anything kept (beyond rounding).
    std::vector<bool> in(p.L, false);
    for (int32_t i : sel) in[i] = true;
    double min_in = 1e300, max_out = -1e300;
    for (int i = 0; i < p.L; ++i) {
      if (in[i]) min_in = std::min(min_in, want[i]);
      else max_out = std::max(max_out, want[i]);
    }
    EXPECT_GE(min_in, max_out - 1e-6 - abs_tol) << "k=" << k;
  }
}

TEST(LagScores, MatchesTranscriptionOnRandomData) {
  std::mt19937 rng(1);
  for (int d : {2, 3, 8, 64, 128, 256}) {
    for (int L : {2, 3, 16, 128, 512}) {
      for (float w : {0.0f, 1.0f, 2.5f}) {
        Partition p(L, d, rng);
        expect_scores_match(p, w);
      }
    }
  }
}

TEST(LagScores, ConstantChannelsUseTheFloor) {
  std::mt19937 rng(2);
  std::uniform_int_distribution<int> steps(-8, 8);
  for (int d : {2, 3, 8, 64, 256}) {
    for (int L : {2, 3, 16, 128, 512}) {
      Partition p(L, d, rng);
      for (int j = 0; j < d; j += 2) {  // every other channel of ref constant
        for (auto* pair : {&p.rk, &p.rv}) {
          for (int i = 0; i < L; ++i) p.at(*pair, i, j) = 0.5f;
        }
        // cur within a few ulps of 0.5 (spacing 2^-24): nrm = m * 2^-24 / 1e-6,
        // of order 0.1, so the floor decides the outcome yet nothing saturates.
        for (auto* cur : {&p.ck, &p.cv}) {
          for (int i = 0; i < L; ++i)
            p.at(*cur, i, j) = j % 4 == 0 ? 0.5f : 0.5f + steps(rng) * 0x1p-24f;
        }
      }
      expect_scores_match(p, 1.0f);
    }
  }
}

TEST(LagScores, ConstantChannelFarFromRefSaturates) {
  // cur off the constant by O(1): nrm ~ 1e6 dominates the std, and the softmax
  // is all but one-hot; compared absolutely (scores lie in [0, 1 + w]).
  std::mt19937 rng(3);
  for (int d : {2, 8, 128}) {
    for (int L : {3, 16, 128}) {
      Partition p(L, d, rng);
      for (int i = 0; i < L; ++i) p.at(p.rk, i, 0) = 2.0f;
      expect_scores_match(p, 1.0f, 1e-5);
    }
  }
}

TEST(LagScores, AllEqualRowsGiveUniformScoresAndLowestOffsets) {
  std::mt19937 rng(4);
  for (int d : {2, 3, 128}) {
    for (int L : {2, 3, 16, 512}) {
      Partition p(L, d, rng);
      for (auto* x : {&p.ck, &p.cv, &p.rk, &p.rv})
        for (int i = 1; i < L; ++i)
          for (int j = 0; j < d; ++j) p.at(*x, i, j) = p.at(*x, 0, j);
      // ref all equal too: every channel takes the floor.
      expect_scores_match(p, 1.0f, 1e-6);
      const std::vector<float> s = p.scores(1.0f);
      for (int i = 0; i < L; ++i) EXPECT_EQ(s[i], s[0]);
      for (int k : {1, std::max(1, L / 4), L}) {
        std::vector<int32_t> first(k);
        for (int i = 0; i < k; ++i) first[i] = i;
        EXPECT_EQ(lag_select(s, k), first);
      }
    }
  }
}

TEST(LagScores, DuplicateRowsTieExactlyAndTheLowerOffsetWins) {
  std::mt19937 rng(5);
  for (int d : {2, 8, 64}) {
    for (int L : {3, 16, 128}) {
      Partition p(L, d, rng);
      const int a = 1, b = L - 1;  // row b copies row a in cur K and cur V
      for (int j = 0; j < d; ++j) {
        p.at(p.ck, b, j) = p.at(p.ck, a, j);
        p.at(p.cv, b, j) = p.at(p.cv, a, j);
      }
      const std::vector<float> s = p.scores(1.0f);
      ASSERT_EQ(s[a], s[b]);
      int rank = 0;  // offsets ranked before a
      for (int i = 0; i < L; ++i) rank += s[i] > s[a];
      const std::vector<int32_t> sel = lag_select(s, rank + 1);
      EXPECT_TRUE(std::binary_search(sel.begin(), sel.end(), a));
      EXPECT_FALSE(std::binary_search(sel.begin(), sel.end(), b));
      expect_scores_match(p, 1.0f);
    }
  }
}

TEST(LagSelect, TiesGoToLowerOffsetAndResultIsAscending) {
  const std::vector<float> s = {0.5f, 0.9f, 0.5f, 0.9f, 0.1f, 0.5f};
  EXPECT_EQ(lag_select(s, 1), (std::vector<int32_t>{1}));
  EXPECT_EQ(lag_select(s, 2), (std::vector<int32_t>{1, 3}));
  EXPECT_EQ(lag_select(s, 3), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(lag_select(s, 4), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(lag_select(s, 6), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  std::mt19937 rng(6);
  std::uniform_int_distribution<int> few(0, 3);  // many ties
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> r(1 + trial % 40);
    for (float& x : r) x = static_cast<float>(few(rng));
    const int k = 1 + trial % static_cast<int>(r.size());
    EXPECT_EQ(lag_select(r, k), brute_select(r, k));
  }
}

// --- Visibility and cache contents --------------------------------------------

struct Case {
  LagPolicy p;
  std::vector<std::set<int>> selected;  // Selected(q) as absolute positions
};

Case random_case(std::mt19937& rng, int max_pos) {
  Case c;
  c.p.enabled = true;
  c.p.sink = std::uniform_int_distribution<int>(0, 20)(rng);
  c.p.lag = std::uniform_int_distribution<int>(1, 16)(rng);
  c.p.keep = std::uniform_int_distribution<int>(1, c.p.lag)(rng);
  for (int q = 0; c.p.sink + q * c.p.lag < max_pos; ++q) {
    std::vector<int> offs(c.p.lag);
    for (int i = 0; i < c.p.lag; ++i) offs[i] = i;
    std::shuffle(offs.begin(), offs.end(), rng);
    std::set<int> sel;
    for (int i = 0; i < c.p.keep; ++i) sel.insert(c.p.sink + q * c.p.lag + offs[i]);
    c.selected.push_back(sel);
  }
  return c;
}

// The set each query t sees, enumerated from DESIGN.md "Visibility".
std::set<int> visible_set(const Case& c, int t) {
  const int S = c.p.sink, L = c.p.lag;
  std::set<int> v;
  if (t < S + 2 * L) {
    for (int j = 0; j <= t; ++j) v.insert(j);
    return v;
  }
  const int ct = (t - S) / L;
  for (int j = 0; j < S; ++j) v.insert(j);
  for (int q = 0; q <= ct - 2; ++q) v.insert(c.selected[q].begin(), c.selected[q].end());
  for (int j = S + (ct - 1) * L; j < S + ct * L; ++j) v.insert(j);
  for (int j = S + ct * L; j <= t; ++j) v.insert(j);
  return v;
}

// The cache after n tokens, enumerated from DESIGN.md "Cache contents".
std::set<int> cache_set(const Case& c, int n) {
  const int S = c.p.sink, L = c.p.lag;
  const int m = n < S ? 0 : (n - S) / L;
  std::set<int> v;
  if (m < 2) {
    for (int j = 0; j < n; ++j) v.insert(j);
    return v;
  }
  for (int j = 0; j < S; ++j) v.insert(j);
  for (int q = 0; q <= m - 2; ++q) v.insert(c.selected[q].begin(), c.selected[q].end());
  for (int j = S + (m - 1) * L; j < n; ++j) v.insert(j);
  return v;
}

TEST(LagVisible, MatchesMaskFromTheSetDefinition) {
  constexpr int kMax = 200;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const Case c = random_case(rng, kMax);
    for (int t = 0; t < kMax; ++t) {
      const std::set<int> want = visible_set(c, t);
      for (int j = 0; j < kMax; ++j) {
        const bool sel = j >= c.p.sink &&
                         c.selected[(j - c.p.sink) / c.p.lag].count(j) != 0;
        ASSERT_EQ(lag_visible(c.p, t, j, sel), want.count(j) != 0)
            << c.p.to_string() << " t=" << t << " j=" << j;
      }
    }
  }
}

TEST(LagVisible, DisabledIsCausal) {
  LagPolicy off;
  for (int t = 0; t < 100; ++t)
    for (int j = 0; j < 100; ++j) {
      EXPECT_EQ(lag_visible(off, t, j, false), j <= t);
      EXPECT_EQ(lag_visible(off, t, j, true), j <= t);
    }
}

TEST(LagCache, RetainedLenCountsTheCacheAndCacheMatchesVisibility) {
  constexpr int kMax = 200;
  std::mt19937 rng(8);
  for (int trial = 0; trial < 300; ++trial) {
    const Case c = random_case(rng, kMax);
    const int S = c.p.sink, L = c.p.lag, k = c.p.keep;
    for (int n = 0; n < kMax; ++n) {
      const std::set<int> cache = cache_set(c, n);
      ASSERT_EQ(c.p.retained_len(n), static_cast<int>(cache.size())) << c.p.to_string()
                                                                      << " n=" << n;
      const int m = n < S ? 0 : (n - S) / L;
      EXPECT_EQ(c.p.complete_partitions(n), m);
      EXPECT_EQ(c.p.compressed_partitions(n), std::max(0, m - 1));
      if (m >= 2) {
        EXPECT_LT(c.p.retained_len(n), S + (m - 1) * k + 2 * L);
      }
      // The query at position n sees the cache before it plus itself.
      std::set<int> with_self = cache;
      with_self.insert(n);
      ASSERT_EQ(with_self, visible_set(c, n)) << c.p.to_string() << " n=" << n;
      if (n >= S) {
        EXPECT_EQ(c.p.partition_of(n), (n - S) / L);
      }
    }
  }
}

TEST(LagCache, DisabledKeepsEverything) {
  LagPolicy off;
  for (int n : {0, 1, 17, 1000}) {
    EXPECT_EQ(off.retained_len(n), n);
    EXPECT_EQ(off.compressed_partitions(n), 0);
  }
  EXPECT_FALSE(off.layer_compressed(0));
  LagPolicy on = *LagPolicy::parse("skip_layers=0;3");
  EXPECT_FALSE(on.layer_compressed(0));
  EXPECT_TRUE(on.layer_compressed(1));
  EXPECT_FALSE(on.layer_compressed(3));
}

// --- Spec parsing ---------------------------------------------------------------

TEST(LagPolicyParse, DefaultsAndKeys) {
  const LagPolicy off = *LagPolicy::parse("off");
  EXPECT_FALSE(off.enabled);
  const LagPolicy on = *LagPolicy::parse(" on ");
  EXPECT_TRUE(on.enabled);
  EXPECT_EQ(on.sink, 16);
  EXPECT_EQ(on.lag, 128);
  EXPECT_EQ(on.keep, 32);
  EXPECT_EQ(on.score_v_weight, 1.0f);
  EXPECT_TRUE(on.skip_layers.empty());

  const LagPolicy a = *LagPolicy::parse("lag=64");
  EXPECT_TRUE(a.enabled);
  EXPECT_EQ(a.keep, 16);  // L/4
  EXPECT_EQ(LagPolicy::parse("lag=2")->keep, 1);  // L/4 floored, at least 1
  EXPECT_EQ(LagPolicy::parse("ratio=0.5,lag=10")->keep, 5);  // order does not matter
  EXPECT_EQ(LagPolicy::parse("lag=2,ratio=0.25")->keep, 1);  // round(0.5) = 1
  EXPECT_EQ(LagPolicy::parse("lag=10,ratio=0.34")->keep, 3);
  EXPECT_EQ(LagPolicy::parse("lag=7,ratio=1")->keep, 7);

  const LagPolicy b = *LagPolicy::parse(" sink = 4 , lag=8,keep=3, w=0.25, skip_layers=5;0;5;2 ");
  EXPECT_EQ(b.sink, 4);
  EXPECT_EQ(b.lag, 8);
  EXPECT_EQ(b.keep, 3);
  EXPECT_EQ(b.score_v_weight, 0.25f);
  EXPECT_EQ(b.skip_layers, (std::vector<int32_t>{0, 2, 5}));  // sorted, unique
  EXPECT_TRUE(LagPolicy::parse("sink=0,lag=1,keep=1,skip_layers=")->skip_layers.empty());
  EXPECT_EQ(LagPolicy::parse("score_v_weight=0")->score_v_weight, 0.0f);
}

TEST(LagPolicyParse, RoundTrips) {
  EXPECT_EQ(LagPolicy{}.to_string(), "off");
  EXPECT_EQ(LagPolicy::parse("sink=4,lag=8,keep=2,w=0.1,skip_layers=1;3")->to_string(),
            "sink=4,lag=8,keep=2,score_v_weight=0.1,skip_layers=1;3");
  std::mt19937 rng(9);
  for (int trial = 0; trial < 2000; ++trial) {
    LagPolicy p;
    p.enabled = true;
    p.sink = std::uniform_int_distribution<int>(0, 1 << 20)(rng);
    p.lag = std::uniform_int_distribution<int>(1, trial % 2 ? 16 : 1 << 20)(rng);
    p.keep = std::uniform_int_distribution<int>(1, p.lag)(rng);
    // Any finite non-negative float, bit pattern at random.
    do {
      const uint32_t bits = static_cast<uint32_t>(rng()) & 0x7fffffffu;
      std::memcpy(&p.score_v_weight, &bits, 4);
    } while (!std::isfinite(p.score_v_weight));
    std::set<int32_t> layers;
    for (int i = trial % 4; i > 0; --i) layers.insert(static_cast<int32_t>(rng() % 100));
    p.skip_layers.assign(layers.begin(), layers.end());
    const absl::StatusOr<LagPolicy> back = LagPolicy::parse(p.to_string());
    ASSERT_TRUE(back.ok()) << p.to_string() << ": " << back.status();
    ASSERT_EQ(*back, p) << p.to_string();
  }
}

TEST(LagPolicyParse, EveryErrorNamesTheKey) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty"},
      {"bogus=1", "bogus"},
      {"sink=1,sink=2", "sink"},
      {"w=1,score_v_weight=2", "score_v_weight"},
      {"sink=abc", "sink"},
      {"sink=1.5", "sink"},
      {"sink=", "sink"},
      {"sink=+3", "sink"},
      {"lag=99999999999", "lag"},
      {"keep=x", "keep"},
      {"sink=-1", "sink"},
      {"lag=0", "lag"},
      {"lag=-3", "lag"},
      {"lag=8,keep=9", "keep"},
      {"lag=8,keep=0", "keep"},
      {"lag=8,keep=-1", "keep"},
      {"ratio=0", "ratio"},
      {"ratio=1.5", "ratio"},
      {"ratio=-0.1", "ratio"},
      {"ratio=nan", "ratio"},
      {"ratio=x", "ratio"},
      {"lag=4,ratio=0.1", "ratio"},  // round(0.4) = 0 tokens
      {"keep=4,ratio=0.5", "ratio"},
      {"w=-1", "score_v_weight"},
      {"w=inf", "score_v_weight"},
      {"w=nan", "score_v_weight"},
      {"w=1e60", "score_v_weight"},
      {"w=", "score_v_weight"},
      {"skip_layers=1;x", "skip_layers"},
      {"skip_layers=1;;2", "skip_layers"},
      {"skip_layers=-1", "skip_layers"},
      {"skip_layers=1,2", "2"},  // ',' separates pairs: "2" is not key=value
      {"sink", "sink"},
      {"sink=1,", "not key=value"},
      {"on,sink=1", "on"},
  };
  for (const auto& [spec, key] : cases) {
    const absl::StatusOr<LagPolicy> p = LagPolicy::parse(spec);
    ASSERT_FALSE(p.ok()) << "'" << spec << "' parsed";
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_NE(p.status().message().find(key), std::string::npos)
        << "'" << spec << "': " << p.status().message();
  }
}

}  // namespace
}  // namespace lagserve::kv
