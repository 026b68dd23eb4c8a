// CPU lag scoring and KV compaction over a paged cache: lag_score_paged
// against the engine/kv reference (lag_scores on a dense copy) and its own
// block-walking reference; kv_compact against its reference and the expected
// contents. Shuffled block tables, NaN in every unused slot.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kv/lag_policy.h"
#include "kernels/cpu/kv_compact.h"
#include "kernels/cpu/lag_score.h"

namespace lagserve::kernels {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A layer's pool holding one sequence of `len` cache entries over shuffled
// blocks (never block 0); every slot not holding an entry is NaN.
struct Cache {
  int n_kv_heads, block_size, head_dim, len;
  std::vector<float> k, v;
  std::vector<int32_t> table;
  PagedKv kv;

  Cache(int n_kv_heads_, int block_size_, int head_dim_, int len_, std::mt19937& rng)
      : n_kv_heads(n_kv_heads_), block_size(block_size_), head_dim(head_dim_), len(len_) {
    const int n_seq = (len + block_size - 1) / block_size;
    const int n_pool = 2 * n_seq + 1;
    std::vector<int32_t> ids(n_pool - 1);
    std::iota(ids.begin(), ids.end(), 1);
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + n_seq);
    const size_t floats = static_cast<size_t>(n_pool) * n_kv_heads * block_size * head_dim;
    k.assign(floats, kNaN);
    v.assign(floats, kNaN);
    kv = PagedKv{k.data(), v.data(), n_kv_heads, block_size, head_dim};
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int i = 0; i < len; ++i)
      for (int h = 0; h < n_kv_heads; ++h)
        for (int c = 0; c < head_dim; ++c) {
          k[at(i, h) + c] = nd(rng);
          v[at(i, h) + c] = nd(rng);
        }
  }
  int64_t at(int index, int head) const {
    return kv.slot_offset(table[index / block_size], head, index % block_size);
  }
  // Rows [begin, begin + n) of one head as a dense [n, head_dim] array.
  std::vector<float> dense(const std::vector<float>& pool, int head, int begin, int n) const {
    std::vector<float> out;
    for (int i = begin; i < begin + n; ++i)
      out.insert(out.end(), pool.begin() + at(i, head), pool.begin() + at(i, head) + head_dim);
    return out;
  }
};

struct ScoreShape {
  int block_size, head_dim, L, cur_begin;
};

class LagScorePaged : public ::testing::TestWithParam<ScoreShape> {};

TEST_P(LagScorePaged, MatchesBothReferences) {
  const ScoreShape s = GetParam();
  std::mt19937 rng(s.block_size * 1009 + s.head_dim * 31 + s.L);
  const int n_kv_heads = 3;
  Cache cache(n_kv_heads, s.block_size, s.head_dim, s.cur_begin + 2 * s.L + 5, rng);
  // A few constant channels in ref (the 1e-6 floor), with cur within a few
  // ulps of the constant (nrm of order 0.1: the floor matters, nothing saturates).
  std::uniform_int_distribution<int> steps(-8, 8);
  for (int c = 0; c < s.head_dim; c += 7)
    for (int i = s.cur_begin; i < s.cur_begin + 2 * s.L; ++i) {
      const bool in_cur = i < s.cur_begin + s.L;
      cache.k[cache.at(i, 1) + c] = 0.25f + (in_cur ? steps(rng) * 0x1p-25f : 0.f);
      cache.v[cache.at(i, 1) + c] = -1.5f + (in_cur ? steps(rng) * 0x1p-23f : 0.f);
    }
  for (int head = 0; head < n_kv_heads; ++head) {
    for (float w : {0.0f, 1.0f, 0.7f}) {
      const int ref_begin = s.cur_begin + s.L;
      std::vector<float> got(s.L, kNaN), ref_kernel(s.L, kNaN);
      lag_score_paged(cache.kv, cache.table.data(), head, s.cur_begin, ref_begin, s.L, w,
                      got.data());
      lag_score_paged_reference(cache.kv, cache.table.data(), head, s.cur_begin, ref_begin,
                                s.L, w, ref_kernel.data());
      const auto ck = cache.dense(cache.k, head, s.cur_begin, s.L);
      const auto rk = cache.dense(cache.k, head, ref_begin, s.L);
      const auto cv = cache.dense(cache.v, head, s.cur_begin, s.L);
      const auto rv = cache.dense(cache.v, head, ref_begin, s.L);
      const std::vector<float> want = kv::lag_scores(ck.data(), rk.data(), cv.data(), rv.data(),
                                                     s.L, s.head_dim, s.head_dim, w);
      for (int i = 0; i < s.L; ++i) {
        ASSERT_NEAR(got[i], want[i], 1e-5 * std::abs(want[i]) + 1e-10)
            << "head " << head << " w " << w << " i " << i;
        ASSERT_NEAR(ref_kernel[i], want[i], 1e-5 * std::abs(want[i]) + 1e-10)
            << "head " << head << " w " << w << " i " << i;
      }
    }
  }
}

TEST(LagScorePaged, RefAnywhereInTheCache) {
  // ref need not follow cur: the kernel takes both starts.
  std::mt19937 rng(77);
  Cache cache(2, 16, 64, 200, rng);
  const int L = 32, cur_begin = 150, ref_begin = 3;
  std::vector<float> got(L, kNaN), want(L, kNaN);
  lag_score_paged(cache.kv, cache.table.data(), 1, cur_begin, ref_begin, L, 1.0f, got.data());
  lag_score_paged_reference(cache.kv, cache.table.data(), 1, cur_begin, ref_begin, L, 1.0f,
                            want.data());
  for (int i = 0; i < L; ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * std::abs(want[i]));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LagScorePaged,
    ::testing::Values(ScoreShape{1, 2, 1, 0}, ScoreShape{1, 3, 3, 4}, ScoreShape{3, 8, 16, 5},
                      ScoreShape{16, 64, 16, 16}, ScoreShape{16, 64, 128, 21},
                      ScoreShape{16, 128, 128, 48}, ScoreShape{32, 128, 64, 7},
                      ScoreShape{7, 256, 32, 3}, ScoreShape{16, 256, 512, 16},
                      ScoreShape{64, 17, 100, 33}));

// --- kv_compact -----------------------------------------------------------------------

struct CompactShape {
  int block_size, head_dim, len;
};

class KvCompact : public ::testing::TestWithParam<CompactShape> {};

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

TEST_P(KvCompact, MatchesReferenceAndExpectedContents) {
  const CompactShape s = GetParam();
  std::mt19937 rng(s.block_size * 7 + s.head_dim + s.len);
  for (int trial = 0; trial < 20; ++trial) {
    Cache cache(2, s.block_size, s.head_dim, s.len, rng);
    const int head = trial % 2;
    const int dst_begin = std::uniform_int_distribution<int>(0, s.len - 1)(rng);
    std::vector<int32_t> src;
    if (trial % 3 == 0) {
      // The engine's shape: keep some of partition [dst_begin, dst_begin + L),
      // then every later entry moves down behind them.
      const int L = std::min(s.len - dst_begin, 1 + trial);
      for (int i = dst_begin; i < dst_begin + L; ++i)
        if (rng() % 3 == 0) src.push_back(i);
      for (int i = dst_begin + L; i < s.len; ++i) src.push_back(i);
    } else {
      // Any ascending subset of [dst_begin, len), identity runs included.
      for (int i = dst_begin; i < s.len; ++i)
        if (rng() % 2 == 0 || i < dst_begin + 2) src.push_back(i);
    }
    const int n = static_cast<int>(src.size());
    const std::vector<float> k0 = cache.k, v0 = cache.v;

    kv_compact(cache.kv, cache.table.data(), head, src.data(), n, dst_begin);
    const std::vector<float> k_fast = cache.k, v_fast = cache.v;
    cache.k = k0;
    cache.v = v0;
    cache.kv.k_pool = cache.k.data();
    cache.kv.v_pool = cache.v.data();
    kv_compact_reference(cache.kv, cache.table.data(), head, src.data(), n, dst_begin);
    expect_same_bits(k_fast, cache.k);
    expect_same_bits(v_fast, cache.v);

    // Expected: row dst_begin + i holds the old row src[i]; every other float
    // of the pool (other heads, other entries, NaN slots) is as before.
    std::vector<float> k_want = k0, v_want = v0;
    for (int i = 0; i < n; ++i) {
      std::copy_n(k0.begin() + cache.at(src[i], head), s.head_dim,
                  k_want.begin() + cache.at(dst_begin + i, head));
      std::copy_n(v0.begin() + cache.at(src[i], head), s.head_dim,
                  v_want.begin() + cache.at(dst_begin + i, head));
    }
    expect_same_bits(k_fast, k_want);
    expect_same_bits(v_fast, v_want);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvCompact,
                         ::testing::Values(CompactShape{1, 2, 9}, CompactShape{3, 5, 40},
                                           CompactShape{16, 64, 100},
                                           CompactShape{16, 128, 300},
                                           CompactShape{32, 256, 129}));

TEST(KvCompact, EmptyAndIdentityMovesChangeNothing) {
  std::mt19937 rng(5);
  Cache cache(2, 4, 8, 20, rng);
  const std::vector<float> k0 = cache.k, v0 = cache.v;
  kv_compact(cache.kv, cache.table.data(), 0, nullptr, 0, 3);
  std::vector<int32_t> same = {5, 6, 7, 8};
  kv_compact(cache.kv, cache.table.data(), 1, same.data(), 4, 5);
  expect_same_bits(cache.k, k0);
  expect_same_bits(cache.v, v0);
}

}  // namespace
}  // namespace lagserve::kernels
