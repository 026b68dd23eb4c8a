// The LagKV GPU ops against their CPU references on the same bf16-rounded
// values: lag_score vs kernels::lag_score_paged_reference, lag_select vs
// kv::lag_select (with exact ties), kv_compact vs kernels::kv_compact_reference
// per head (bit-exact, whole pool), and score -> select -> compact end to end.
// Shuffled block tables (never block 0), NaN in every unused slot and output.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kv/lag_policy.h"
#include "kernels/cpu/kv_compact.h"
#include "kernels/cpu/lag_score.h"
#include "kernels/cuda/kv_compact.h"
#include "kernels/cuda/lag_score.h"
#include "kernels/cuda/lag_select.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;

// One layer's cache holding cache indices [0, n_entries) of one sequence, with
// the same values in an fp32 CPU pool and a bf16 GPU pool; unused slots NaN.
struct TestCache {
  int n_kv_heads, block_size, head_dim;
  std::vector<int32_t> table;
  std::vector<float> k, v;  // [n_pool, n_kv_heads, block_size, head_dim]
  std::unique_ptr<DeviceArray<bf16>> gk, gv;
  std::unique_ptr<DeviceArray<int32_t>> gtable;

  TestCache(int heads, int bs, int d, int n_entries, std::mt19937& rng)
      : n_kv_heads(heads), block_size(bs), head_dim(d) {
    const int n_used = (n_entries + bs - 1) / bs, n_pool = 2 * n_used + 3;
    std::vector<int32_t> ids(n_pool - 1);
    std::iota(ids.begin(), ids.end(), 1);  // block 0 is never used
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(ids.begin(), ids.begin() + n_used);
    const size_t elems = static_cast<size_t>(n_pool) * heads * bs * d;
    k.assign(elems, NAN);
    v.assign(elems, NAN);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (int i = 0; i < n_entries; ++i) {
      for (int h = 0; h < heads; ++h) {
        for (int c = 0; c < d; ++c) {
          k_at(h, i, c) = nd(rng);
          v_at(h, i, c) = nd(rng);
        }
      }
    }
    round_to_bf16();
  }
  float& k_at(int h, int i, int c) { return k[cpu().slot_offset(table[i / block_size], h, i % block_size) + c]; }
  float& v_at(int h, int i, int c) { return v[cpu().slot_offset(table[i / block_size], h, i % block_size) + c]; }
  void round_to_bf16() {
    k = lagserve::testing::round_bf16(k);
    v = lagserve::testing::round_bf16(v);
  }
  void upload() {
    gk = std::make_unique<DeviceArray<bf16>>(lagserve::testing::to_bf16(k));
    gv = std::make_unique<DeviceArray<bf16>>(lagserve::testing::to_bf16(v));
    gtable = std::make_unique<DeviceArray<int32_t>>(table);
  }
  kernels::PagedKv cpu() { return {k.data(), v.data(), n_kv_heads, block_size, head_dim}; }
  PagedKvBf16 gpu() const { return {gk->get(), gv->get(), n_kv_heads, block_size, head_dim}; }
};

// Equal values, or NaN on both sides.
void expect_same_pool(const std::vector<float>& gpu, const std::vector<float>& cpu, const char* what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const bool same = gpu[i] == cpu[i] || (std::isnan(gpu[i]) && std::isnan(cpu[i]));
    if (!same && bad++ == 0) first = static_cast<int64_t>(i);
  }
  EXPECT_EQ(bad, 0) << what << ": first difference at element " << first;
}

// ---- lag_score ----------------------------------------------------------------

struct ScoreCase {
  int n_kv_heads, head_dim, L, n_due;
  float w;
  int constant;  // 0: none; 1: a channel constant everywhere (nrm 0 there, by the
                 // 1e-6 floor); 2: a constant ref channel under distinct cur values
};

class LagScore : public ::testing::TestWithParam<ScoreCase> {};

TEST_P(LagScore, MatchesCpuReference) {
  LAGSERVE_REQUIRE_GPU();
  const ScoreCase c = GetParam();
  const int bs = 16, region = 21, L = c.L, n_due = c.n_due, H = c.n_kv_heads;
  std::mt19937 rng(c.head_dim * 1000 + L * 10 + n_due + H * 7 + c.constant * 13);
  TestCache cache(H, bs, c.head_dim, region + (n_due + 1) * L + 5, rng);
  if (c.constant == 1) {
    for (int i = 0; i < region + (n_due + 1) * L; ++i) cache.k_at(0, i, 3) = cache.v_at(0, i, 3) = 0.5f;
  } else if (c.constant == 2) {
    const int cur = region + (n_due - 1) * L, ref = cur + L;
    for (int i = 0; i < L; ++i) {
      cache.k_at(H - 1, ref + i, 5) = 0.25f;
      cache.k_at(H - 1, cur + i, 5) = 0.3f + static_cast<float>(i) / 256.f;  // distinct in bf16
    }
    cache.round_to_bf16();
  }
  cache.upload();
  DeviceArray<float> scores(static_cast<size_t>(H) * n_due * L);
  scores.poison();
  lag_score(cache.gpu(), cache.gtable->get(), region, n_due, L, c.w, scores.get(), nullptr);
  const std::vector<float> got = scores.download();
  std::vector<float> want(L);
  for (int h = 0; h < H; ++h) {
    for (int r = 0; r < n_due; ++r) {
      const int cur = region + r * L;
      kernels::lag_score_paged_reference(cache.cpu(), cache.table.data(), h, cur, cur + L, L, c.w,
                                         want.data());
      const std::vector<float> row(got.begin() + (static_cast<size_t>(h) * n_due + r) * L,
                                   got.begin() + (static_cast<size_t>(h) * n_due + r + 1) * L);
      EXPECT_LT(lagserve::testing::max_rel_err(row, want), 1e-5) << "head " << h << " partition " << r;
    }
  }
}

std::vector<ScoreCase> score_cases() {
  std::vector<ScoreCase> cases;
  for (int d : {64, 128}) {
    for (int L : {16, 32, 128}) {
      for (int n_due : {1, 2, 3}) cases.push_back({2, d, L, n_due, 1.0f, 0});
    }
  }
  for (float w : {0.0f, 0.5f}) cases.push_back({3, 128, 32, 2, w, 0});
  for (int constant : {1, 2}) {
    cases.push_back({2, 64, 16, 2, 1.0f, constant});
    cases.push_back({3, 128, 128, 1, 0.5f, constant});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, LagScore, ::testing::ValuesIn(score_cases()));

// ---- lag_select ---------------------------------------------------------------

// The kept flags of kv::lag_select for each row of scores.
std::vector<uint8_t> select_reference(const std::vector<float>& scores, int n_rows, int L, int k) {
  std::vector<uint8_t> out(scores.size(), 0);
  for (int row = 0; row < n_rows; ++row) {
    const std::span<const float> s(scores.data() + static_cast<size_t>(row) * L, L);
    for (int32_t off : kv::lag_select(s, k)) out[static_cast<size_t>(row) * L + off] = 1;
  }
  return out;
}

TEST(LagSelect, MatchesReferenceWithAndWithoutTies) {
  LAGSERVE_REQUIRE_GPU();
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  const int n_rows = 6;
  for (int L : {16, 128, 1000}) {
    for (int k : {1, std::max(1, L / 4), L - 1, L}) {
      for (bool ties : {false, true}) {
        std::vector<float> s(static_cast<size_t>(n_rows) * L);
        for (float& x : s) x = ties ? std::floor(ud(rng) * 4.f) / 4.f : ud(rng);
        if (ties) std::fill(s.begin(), s.begin() + L, 0.5f);  // one row all equal
        DeviceArray<float> gs(s);
        DeviceArray<uint8_t> sel(s.size());
        sel.poison();
        lag_select(gs.get(), n_rows, L, k, sel.get(), nullptr);
        EXPECT_EQ(sel.download(), select_reference(s, n_rows, L, k))
            << "L " << L << " k " << k << " ties " << ties;
      }
    }
  }
}

// ---- kv_compact ---------------------------------------------------------------

// The source list of kv_compact for head h (as the CPU backend builds it).
std::vector<int32_t> compact_sources(const std::vector<uint8_t>& sel, int h, int region, int n_due,
                                     int L, int end) {
  std::vector<int32_t> src;
  for (int r = 0; r < n_due; ++r) {
    for (int off = 0; off < L; ++off) {
      if (sel[(static_cast<size_t>(h) * n_due + r) * L + off]) src.push_back(region + r * L + off);
    }
  }
  for (int j = region + n_due * L; j < end; ++j) src.push_back(j);
  return src;
}

void compact_reference(TestCache& cache, const std::vector<uint8_t>& sel, int region, int n_due,
                       int L, int end) {
  for (int h = 0; h < cache.n_kv_heads; ++h) {
    const std::vector<int32_t> src = compact_sources(sel, h, region, n_due, L, end);
    kernels::kv_compact_reference(cache.cpu(), cache.table.data(), h, src.data(),
                                  static_cast<int32_t>(src.size()), region);
  }
}

void run_compact(TestCache& cache, const DeviceArray<uint8_t>& sel, int region, int n_due, int L,
                 int end) {
  DeviceArray<bf16> scratch(kv_compact_scratch_elems(cache.n_kv_heads, cache.head_dim, region, end));
  scratch.poison();
  kv_compact(cache.gpu(), cache.gtable->get(), sel.get(), region, n_due, L, end, scratch.get(),
             nullptr);
}

struct CompactCase {
  int n_kv_heads, head_dim, L, n_due, tail;  // tail: entries after the due partitions
  bool exact_k;                              // k per partition, else random flags
};

class KvCompact : public ::testing::TestWithParam<CompactCase> {};

TEST_P(KvCompact, MatchesCpuReferenceBitExact) {
  LAGSERVE_REQUIRE_GPU();
  const CompactCase c = GetParam();
  const int bs = 16, region = 19, L = c.L, k = std::max(1, L / 4);
  const int end = region + c.n_due * L + c.tail;
  std::mt19937 rng(c.n_kv_heads * 100 + c.head_dim + L * 3 + c.n_due * 17 + c.tail + c.exact_k);
  TestCache cache(c.n_kv_heads, bs, c.head_dim, end, rng);
  cache.upload();
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  const int n_rows = c.n_kv_heads * c.n_due;
  std::vector<float> scores(static_cast<size_t>(n_rows) * L);
  for (float& x : scores) x = ud(rng);
  std::vector<uint8_t> sel = select_reference(scores, n_rows, L, k);
  if (!c.exact_k) {
    for (uint8_t& f : sel) f = ud(rng) < 0.4f ? 1 : 0;
    sel[0] = 1;  // a leading kept run that stays in place
  }
  if (sel.empty()) sel.push_back(0);  // n_due == 0: nothing is read; keep the array non-empty
  DeviceArray<uint8_t> gsel(sel);
  run_compact(cache, gsel, region, c.n_due, L, end);
  compact_reference(cache, sel, region, c.n_due, L, end);
  expect_same_pool(lagserve::testing::to_float(cache.gk->download()), cache.k, "K");
  expect_same_pool(lagserve::testing::to_float(cache.gv->download()), cache.v, "V");
}

INSTANTIATE_TEST_SUITE_P(Cases, KvCompact,
                         ::testing::Values(CompactCase{2, 64, 16, 1, 20, true},
                                           CompactCase{2, 128, 32, 3, 40, true},
                                           CompactCase{3, 128, 128, 2, 150, true},
                                           CompactCase{3, 64, 16, 3, 16, false},
                                           CompactCase{2, 128, 128, 2, 300, false},
                                           CompactCase{1, 6, 16, 2, 17, true},  // head_dim % 8 != 0
                                           CompactCase{2, 64, 16, 0, 40, true},  // nothing moves
                                           CompactCase{8, 128, 128, 20, 200, true}));

// ---- end to end ---------------------------------------------------------------

TEST(LagKernels, ScoreSelectCompactEndToEnd) {
  LAGSERVE_REQUIRE_GPU();
  for (const int d : {64, 128}) {
    const int H = 3, bs = 16, L = 32, k = 8, n_due = 2, region = 16 + 8;
    const int end = region + (n_due + 1) * L + 9;
    std::mt19937 rng(41 + d);
    TestCache cache(H, bs, d, end, rng);
    cache.upload();
    const float w = 1.0f;
    DeviceArray<float> scores(static_cast<size_t>(H) * n_due * L);
    DeviceArray<uint8_t> sel(scores.size());
    scores.poison();
    sel.poison();
    lag_score(cache.gpu(), cache.gtable->get(), region, n_due, L, w, scores.get(), nullptr);
    lag_select(scores.get(), H * n_due, L, k, sel.get(), nullptr);
    run_compact(cache, sel, region, n_due, L, end);

    const std::vector<float> gpu_scores = scores.download();
    std::vector<float> cpu_scores(gpu_scores.size());
    for (int h = 0; h < H; ++h) {
      for (int r = 0; r < n_due; ++r) {
        const int cur = region + r * L;
        kernels::lag_score_paged_reference(cache.cpu(), cache.table.data(), h, cur, cur + L, L, w,
                                           cpu_scores.data() + (static_cast<size_t>(h) * n_due + r) * L);
      }
    }
    std::vector<uint8_t> cpu_sel = select_reference(cpu_scores, H * n_due, L, k);
    // A k-th and (k+1)-th score within fp32 rounding of each other may swap
    // between the two sides; then both sides must agree on the GPU's scores.
    for (int row = 0; row < H * n_due; ++row) {
      std::vector<float> s(cpu_scores.begin() + row * L, cpu_scores.begin() + (row + 1) * L);
      std::sort(s.begin(), s.end(), std::greater<float>());
      if (s[k - 1] - s[k] <= 1e-5f * s[0]) {
        const std::vector<float> g(gpu_scores.begin() + row * L, gpu_scores.begin() + (row + 1) * L);
        const std::vector<uint8_t> gsel = select_reference(g, 1, L, k);
        std::copy(gsel.begin(), gsel.end(), cpu_sel.begin() + row * L);
        std::printf("row %d: near tie at the cut, selection taken from the GPU scores\n", row);
      }
    }
    EXPECT_EQ(sel.download(), cpu_sel) << "head_dim " << d;
    compact_reference(cache, cpu_sel, region, n_due, L, end);
    expect_same_pool(lagserve::testing::to_float(cache.gk->download()), cache.k, "K");
    expect_same_pool(lagserve::testing::to_float(cache.gv->download()), cache.v, "V");
  }
}

}  // namespace
}  // namespace lagserve::kernels::cuda
