// The batched LagKV GPU ops against their CPU references on the same
// bf16-rounded values, several sequences per call with different L, k, w,
// n_due (0 included), regions and ends: lag_score vs
// kernels::lag_score_paged_reference, lag_select vs kv::lag_select (with exact
// ties), kv_compact vs kernels::kv_compact_reference per head (bit-exact, whole
// pool), and score -> select -> compact end to end. Shuffled block tables
// (never block 0), NaN in every unused slot; every output poisoned before the
// call, and what no entry owns (gaps between the entries' outputs) must stay so.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kv/lag_policy.h"
#include "kernels/cpu/kv_compact.h"
#include "kernels/cpu/lag_score.h"
#include "kernels/cuda/kv_compact.h"
#include "kernels/cuda/lag_score.h"
#include "kernels/cuda/lag_select.h"
#include "kernels/cuda/lag_work.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;

// One layer's cache holding several sequences, sequence s with cache indices
// [0, n_entries[s]), the same values in an fp32 CPU pool and a bf16 GPU pool;
// unused slots NaN. The block tables lie one after the other in `tables`.
struct TestCache {
  int n_kv_heads, block_size, head_dim;
  std::vector<int32_t> tables, table_offset;  // sequence s: tables + table_offset[s]
  std::vector<float> k, v;  // [n_pool, n_kv_heads, block_size, head_dim]
  std::unique_ptr<DeviceArray<bf16>> gk, gv;
  std::unique_ptr<DeviceArray<int32_t>> gtables;

  TestCache(int heads, int bs, int d, const std::vector<int>& n_entries, std::mt19937& rng)
      : n_kv_heads(heads), block_size(bs), head_dim(d) {
    int n_used = 0;
    for (int n : n_entries) {
      table_offset.push_back(n_used);
      n_used += (n + bs - 1) / bs;
    }
    const int n_pool = 2 * n_used + 3;
    std::vector<int32_t> ids(n_pool - 1);
    std::iota(ids.begin(), ids.end(), 1);  // block 0 is never used
    std::shuffle(ids.begin(), ids.end(), rng);
    tables.assign(ids.begin(), ids.begin() + n_used);
    const size_t elems = static_cast<size_t>(n_pool) * heads * bs * d;
    k.assign(elems, NAN);
    v.assign(elems, NAN);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (size_t s = 0; s < n_entries.size(); ++s) {
      for (int i = 0; i < n_entries[s]; ++i) {
        for (int h = 0; h < heads; ++h) {
          for (int c = 0; c < d; ++c) {
            k_at(s, h, i, c) = nd(rng);
            v_at(s, h, i, c) = nd(rng);
          }
        }
      }
    }
    round_to_bf16();
  }
  const int32_t* table(size_t s) const { return tables.data() + table_offset[s]; }
  int64_t at(size_t s, int h, int i, int c) {
    return cpu().slot_offset(table(s)[i / block_size], h, i % block_size) + c;
  }
  float& k_at(size_t s, int h, int i, int c) { return k[at(s, h, i, c)]; }
  float& v_at(size_t s, int h, int i, int c) { return v[at(s, h, i, c)]; }
  void round_to_bf16() {
    k = lagserve::testing::round_bf16(k);
    v = lagserve::testing::round_bf16(v);
  }
  void upload() {
    gk = std::make_unique<DeviceArray<bf16>>(lagserve::testing::to_bf16(k));
    gv = std::make_unique<DeviceArray<bf16>>(lagserve::testing::to_bf16(v));
    gtables = std::make_unique<DeviceArray<int32_t>>(tables);
  }
  kernels::PagedKv cpu() { return {k.data(), v.data(), n_kv_heads, block_size, head_dim}; }
  PagedKvBf16 gpu() const { return {gk->get(), gv->get(), n_kv_heads, block_size, head_dim}; }
};

// One entry of a batch as a test states it; entry e works on sequence e.
struct Entry {
  int region, n_due, L, keep;
  float w;
  int end;  // compaction end, and the sequence's length
};

// The LagWork array of a batch with its entries' outputs one after the other,
// a gap that no entry owns before each, and the maxima for the grid.
struct Batch {
  std::vector<LagWork> works;
  int64_t score_floats = 0, sel_bytes = 0, scratch_elems = 0;
  int32_t max_due = 0, max_lag = 1, max_src = 0;
  std::unique_ptr<DeviceArray<int32_t>> words;  // works as the backend holds them

  Batch(const std::vector<Entry>& entries, int n_kv_heads, int head_dim) {
    for (size_t e = 0; e < entries.size(); ++e) {
      const Entry& x = entries[e];
      LagWork w;
      w.region = x.region, w.n_due = x.n_due, w.lag = x.L, w.keep = x.keep, w.v_weight = x.w;
      w.end = x.end;
      const int64_t flags = static_cast<int64_t>(n_kv_heads) * x.n_due * x.L;
      score_floats += 3;  // the gaps
      sel_bytes += 5;
      scratch_elems += 8;  // keeps scratch_offset a multiple of 8
      w.score_offset = static_cast<int32_t>(score_floats);
      w.sel_offset = static_cast<int32_t>(sel_bytes);
      w.scratch_offset = static_cast<int32_t>(scratch_elems);
      score_floats += flags;
      sel_bytes += flags;
      scratch_elems += kv_compact_scratch_elems(n_kv_heads, head_dim, x.region, x.end);
      works.push_back(w);
      if (x.n_due > 0) {
        max_due = std::max(max_due, x.n_due);
        max_lag = std::max(max_lag, x.L);
        max_src = std::max(max_src, x.end - x.region);
      }
    }
  }
  // Uploads the works, with the table offsets of `cache` when there is one.
  // They sit one int32 word into the buffer: the kernels read them at any
  // 4-byte alignment, as from the backend's metadata.
  const LagWork* upload(const TestCache* cache) {
    for (size_t e = 0; cache != nullptr && e < works.size(); ++e) {
      works[e].table_offset = cache->table_offset[e];
    }
    std::vector<int32_t> host(1 + works.size() * sizeof(LagWork) / sizeof(int32_t), -1);
    std::memcpy(host.data() + 1, works.data(), works.size() * sizeof(LagWork));
    words = std::make_unique<DeviceArray<int32_t>>(host);
    return reinterpret_cast<const LagWork*>(words->get() + 1);
  }
  int32_t n_works() const { return static_cast<int32_t>(works.size()); }
};

// Equal values, or NaN on both sides.
void expect_same_pool(const std::vector<float>& gpu, const std::vector<float>& cpu,
                      const char* what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  int64_t bad = 0, first = -1;
  for (size_t i = 0; i < cpu.size(); ++i) {
    const bool same = gpu[i] == cpu[i] || (std::isnan(gpu[i]) && std::isnan(cpu[i]));
    if (!same && bad++ == 0) first = static_cast<int64_t>(i);
  }
  EXPECT_EQ(bad, 0) << what << ": first difference at element " << first;
}

// The scores of the batch by the CPU reference, NaN where no entry writes.
std::vector<float> score_reference(TestCache& cache, const Batch& b) {
  std::vector<float> out(b.score_floats, NAN);
  for (size_t e = 0; e < b.works.size(); ++e) {
    const LagWork& w = b.works[e];
    for (int h = 0; h < cache.n_kv_heads; ++h) {
      for (int r = 0; r < w.n_due; ++r) {
        const int cur = w.region + r * w.lag;
        float* row = out.data() + w.score_offset + (static_cast<int64_t>(h) * w.n_due + r) * w.lag;
        kernels::lag_score_paged_reference(cache.cpu(), cache.table(e), h, cur, cur + w.lag, w.lag,
                                           w.v_weight, row);
      }
    }
  }
  return out;
}

// Each entry's rows within 1e-5 relative of the reference; NaN (the poison)
// wherever no entry writes.
void expect_scores_match(const std::vector<float>& got, const std::vector<float>& want,
                         const Batch& b, int n_kv_heads) {
  ASSERT_EQ(got.size(), want.size());
  std::vector<bool> owned(got.size(), false);
  for (size_t e = 0; e < b.works.size(); ++e) {
    const LagWork& w = b.works[e];
    for (int row = 0; row < n_kv_heads * w.n_due; ++row) {
      const int64_t first = w.score_offset + static_cast<int64_t>(row) * w.lag;
      const std::vector<float> g(got.begin() + first, got.begin() + first + w.lag);
      const std::vector<float> x(want.begin() + first, want.begin() + first + w.lag);
      EXPECT_LT(lagserve::testing::max_rel_err(g, x), 1e-5)
          << "entry " << e << " (L " << w.lag << ", n_due " << w.n_due << ", w " << w.v_weight
          << ") head " << row / w.n_due << " partition " << row % w.n_due;
      std::fill(owned.begin() + first, owned.begin() + first + w.lag, true);
    }
  }
  int64_t stray = 0;
  for (size_t i = 0; i < got.size(); ++i) stray += !owned[i] && !std::isnan(got[i]);
  EXPECT_EQ(stray, 0) << "scores written outside every entry";
}

// ---- lag_score ----------------------------------------------------------------

struct ScoreEntry {
  int region, n_due, L;
  float w;
  int constant;  // 0: none; 1: a channel constant everywhere (nrm 0 there, by the
                 // 1e-6 floor); 2: a constant ref channel under distinct cur values
};

struct ScoreCase {
  int n_kv_heads, head_dim;
  std::vector<ScoreEntry> entries;
  bool loose_max;  // max_due and max_lag above the entries' largest
};

void PrintTo(const ScoreCase& c, std::ostream* os) {
  *os << "n_kv_heads " << c.n_kv_heads << ", head_dim " << c.head_dim << ", {region, n_due, L, w}:";
  for (const ScoreEntry& x : c.entries) {
    *os << " {" << x.region << ", " << x.n_due << ", " << x.L << ", " << x.w << "}";
  }
}

class LagScore : public ::testing::TestWithParam<ScoreCase> {};

TEST_P(LagScore, MatchesCpuReference) {
  LAGSERVE_REQUIRE_GPU();
  const ScoreCase c = GetParam();
  const int bs = 16, H = c.n_kv_heads;
  std::vector<Entry> entries;
  std::vector<int> lengths;
  for (const ScoreEntry& x : c.entries) {
    const int end = x.region + (x.n_due + 1) * x.L + 5;
    entries.push_back({x.region, x.n_due, x.L, std::max(1, x.L / 4), x.w, end});
    lengths.push_back(end);
  }
  std::mt19937 rng(c.head_dim * 1000 + H * 7 + static_cast<int>(c.entries.size()) * 13);
  TestCache cache(H, bs, c.head_dim, lengths, rng);
  for (size_t s = 0; s < c.entries.size(); ++s) {
    const ScoreEntry& x = c.entries[s];
    if (x.constant == 1) {
      for (int i = 0; i < x.region + (x.n_due + 1) * x.L; ++i) {
        cache.k_at(s, 0, i, 3) = cache.v_at(s, 0, i, 3) = 0.5f;
      }
    } else if (x.constant == 2) {
      const int cur = x.region + (x.n_due - 1) * x.L, ref = cur + x.L;
      for (int i = 0; i < x.L; ++i) {
        cache.k_at(s, H - 1, ref + i, 5) = 0.25f;
        cache.k_at(s, H - 1, cur + i, 5) = 0.3f + static_cast<float>(i) / 256.f;  // distinct bf16
      }
    }
  }
  cache.round_to_bf16();
  cache.upload();
  Batch b(entries, H, c.head_dim);
  const LagWork* works = b.upload(&cache);
  const int32_t max_due = b.max_due + (c.loose_max ? 2 : 0);
  const int32_t max_lag = c.loose_max ? std::min(2048, b.max_lag + 16) : b.max_lag;
  DeviceArray<float> scores(b.score_floats);
  scores.poison();
  lag_score(cache.gpu(), cache.gtables->get(), works, b.n_works(), max_due, max_lag, scores.get(),
            nullptr);
  expect_scores_match(scores.download(), score_reference(cache, b), b, H);
}

std::vector<ScoreCase> score_cases() {
  std::vector<ScoreCase> cases;
  // Every (L, n_due) of one head_dim in one call, at regions that do and do
  // not start a block, with entries that have nothing to do between them.
  for (int d : {64, 128}) {
    ScoreCase c{2, d, {}, d == 128};
    int i = 0;
    for (int L : {16, 32, 128}) {
      for (int n_due : {1, 2, 3}) {
        c.entries.push_back({i == 4 ? 0 : 21 + 9 * i, n_due, L, 1.0f, 0});
        ++i;
      }
      c.entries.push_back({16, 0, L, 1.0f, 0});
    }
    cases.push_back(c);
  }
  cases.push_back({3, 128, {{21, 2, 32, 0.0f, 0}, {21, 2, 32, 0.5f, 0}, {16, 0, 64, 1.0f, 0},
                            {40, 1, 128, 2.0f, 0}}, false});
  cases.push_back(
      {2, 64, {{21, 2, 16, 1.0f, 1}, {7, 2, 16, 1.0f, 2}, {16, 3, 64, 0.5f, 0}}, false});
  cases.push_back({3, 128, {{21, 1, 128, 0.5f, 1}, {0, 0, 16, 1.0f, 0}, {33, 1, 128, 0.5f, 2},
                            {16, 2, 32, 1.0f, 0}}, true});
  // The head_dim and L bounds: 2 channel pairs of 512 per lane, the 2048-row
  // shared memory; and a head_dim with an odd number of channel pairs.
  cases.push_back({1, 512, {{16, 2, 64, 1.0f, 0}, {3, 1, 2048, 0.5f, 0}}, false});
  cases.push_back({2, 6, {{16, 2, 16, 1.0f, 0}, {5, 1, 32, 0.5f, 0}, {0, 3, 1, 1.0f, 0}}, false});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, LagScore, ::testing::ValuesIn(score_cases()));

// ---- lag_select ---------------------------------------------------------------

// The kept flags of kv::lag_select for each row of scores.
std::vector<uint8_t> select_reference(std::span<const float> scores, int n_rows, int L, int k) {
  std::vector<uint8_t> out(scores.size(), 0);
  for (int row = 0; row < n_rows; ++row) {
    const std::span<const float> s = scores.subspan(static_cast<size_t>(row) * L, L);
    for (int32_t off : kv::lag_select(s, k)) out[static_cast<size_t>(row) * L + off] = 1;
  }
  return out;
}

// The flags of the batch by kv::lag_select on `scores`; 0xFF (the poison)
// wherever no entry writes.
std::vector<uint8_t> batch_select_reference(const std::vector<float>& scores, const Batch& b,
                                            int n_kv_heads) {
  std::vector<uint8_t> out(b.sel_bytes, 0xFF);
  for (const LagWork& w : b.works) {
    if (w.n_due <= 0) continue;
    const int n_rows = n_kv_heads * w.n_due;
    const std::span<const float> s(scores.data() + w.score_offset,
                                   static_cast<size_t>(n_rows) * w.lag);
    const std::vector<uint8_t> flags = select_reference(s, n_rows, w.lag, w.keep);
    std::copy(flags.begin(), flags.end(), out.begin() + w.sel_offset);
  }
  return out;
}

// Random scores in every entry's rows (quantised to quarters with ties, and
// then each entry's first row all equal); NaN in the gaps, never read.
void run_select_case(const std::vector<Entry>& entries, int H, bool ties, std::mt19937& rng) {
  Batch b(entries, H, 2);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  std::vector<float> s(b.score_floats, NAN);
  for (const LagWork& w : b.works) {
    float* row0 = s.data() + w.score_offset;
    for (int64_t i = 0; i < static_cast<int64_t>(H) * w.n_due * w.lag; ++i) {
      row0[i] = ties ? std::floor(ud(rng) * 4.f) / 4.f : ud(rng);
    }
    if (ties && w.n_due > 0) std::fill(row0, row0 + w.lag, 0.5f);
  }
  const LagWork* works = b.upload(nullptr);
  DeviceArray<float> gs(s);
  DeviceArray<uint8_t> sel(b.sel_bytes);
  sel.poison();
  lag_select(gs.get(), works, b.n_works(), H, b.max_due, b.max_lag, sel.get(), nullptr);
  const std::vector<uint8_t> got = sel.download(), want = batch_select_reference(s, b, H);
  for (size_t e = 0; e < b.works.size(); ++e) {
    const LagWork& w = b.works[e];
    const int64_t n = static_cast<int64_t>(H) * w.n_due * w.lag;
    EXPECT_TRUE(std::equal(got.begin() + w.sel_offset, got.begin() + w.sel_offset + n,
                           want.begin() + w.sel_offset))
        << "entry " << e << ": L " << w.lag << " k " << w.keep << " n_due " << w.n_due
        << " ties " << ties;
  }
  int64_t n_diff = 0;
  for (size_t i = 0; i < got.size(); ++i) n_diff += got[i] != want[i];
  EXPECT_EQ(n_diff, 0) << "flags that differ: in the entries above, or written outside every entry";
}

TEST(LagSelect, MatchesReferenceWithAndWithoutTies) {
  LAGSERVE_REQUIRE_GPU();
  std::mt19937 rng(7);
  for (bool ties : {false, true}) {
    std::vector<Entry> entries;
    int i = 0;
    for (int L : {16, 128, 1000}) {
      for (int k : {1, std::max(1, L / 4), L - 1, L}) {
        entries.push_back({0, 1 + i % 3, L, k, 1.f, 0});
        ++i;
      }
      entries.push_back({0, 0, L, 1, 1.f, 0});
    }
    run_select_case(entries, 2, ties, rng);
  }
}

// Rows longer than the shared memory holds are ranked from global memory, the
// short rows of the same call too.
TEST(LagSelect, LongRowsFromGlobalMemory) {
  LAGSERVE_REQUIRE_GPU();
  std::mt19937 rng(11);
  const int L = 12 * 1024 + 20;
  const std::vector<Entry> entries = {{0, 1, L, 1, 1.f, 0}, {0, 1, L, L / 4, 1.f, 0},
                                      {0, 2, 16, 4, 1.f, 0}, {0, 0, L, 1, 1.f, 0}};
  for (bool ties : {false, true}) run_select_case(entries, 1, ties, rng);
}

// ---- kv_compact ---------------------------------------------------------------

// The source list of entry e's kv_compact for head h (as the CPU backend builds it).
std::vector<int32_t> compact_sources(const std::vector<uint8_t>& sel, const LagWork& w, int h) {
  std::vector<int32_t> src;
  for (int r = 0; r < w.n_due; ++r) {
    for (int off = 0; off < w.lag; ++off) {
      if (sel[w.sel_offset + (static_cast<size_t>(h) * w.n_due + r) * w.lag + off]) {
        src.push_back(w.region + r * w.lag + off);
      }
    }
  }
  for (int j = w.region + w.n_due * w.lag; j < w.end; ++j) src.push_back(j);
  return src;
}

void compact_reference(TestCache& cache, const std::vector<uint8_t>& sel, const Batch& b) {
  for (size_t e = 0; e < b.works.size(); ++e) {
    if (b.works[e].n_due <= 0) continue;  // skipped (its sources would stay in place anyway)
    for (int h = 0; h < cache.n_kv_heads; ++h) {
      const std::vector<int32_t> src = compact_sources(sel, b.works[e], h);
      kernels::kv_compact_reference(cache.cpu(), cache.table(e), h, src.data(),
                                    static_cast<int32_t>(src.size()), b.works[e].region);
    }
  }
}

void run_compact(TestCache& cache, Batch& b, const DeviceArray<uint8_t>& sel, int32_t max_src) {
  const LagWork* works = b.upload(&cache);
  DeviceArray<bf16> scratch(std::max<int64_t>(b.scratch_elems, 1));
  scratch.poison();
  kv_compact(cache.gpu(), cache.gtables->get(), works, b.n_works(), max_src, sel.get(),
             scratch.get(), nullptr);
}

struct CompactEntry {
  int region, n_due, L, tail;  // tail: entries after the due partitions
  bool exact_k;                // k = L/4 per partition, else random flags
};

struct CompactCase {
  int n_kv_heads, head_dim;
  std::vector<CompactEntry> entries;
  bool loose_max;  // max_src above the entries' largest
};

void PrintTo(const CompactCase& c, std::ostream* os) {
  *os << "n_kv_heads " << c.n_kv_heads << ", head_dim " << c.head_dim
      << ", {region, n_due, L, tail}:";
  for (const CompactEntry& x : c.entries) {
    *os << " {" << x.region << ", " << x.n_due << ", " << x.L << ", " << x.tail << "}";
  }
}

class KvCompact : public ::testing::TestWithParam<CompactCase> {};

TEST_P(KvCompact, MatchesCpuReferenceBitExact) {
  LAGSERVE_REQUIRE_GPU();
  const CompactCase c = GetParam();
  const int bs = 16, H = c.n_kv_heads;
  std::vector<Entry> entries;
  std::vector<int> lengths;
  for (const CompactEntry& x : c.entries) {
    const int end = x.region + x.n_due * x.L + x.tail;
    entries.push_back({x.region, x.n_due, x.L, std::max(1, x.L / 4), 1.f, end});
    lengths.push_back(end);
  }
  std::mt19937 rng(H * 100 + c.head_dim + static_cast<int>(c.entries.size()) * 17 + c.loose_max);
  TestCache cache(H, bs, c.head_dim, lengths, rng);
  cache.upload();
  Batch b(entries, H, c.head_dim);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  std::vector<uint8_t> sel(std::max<int64_t>(b.sel_bytes, 1), 0xFF);  // gaps: never read
  for (size_t e = 0; e < c.entries.size(); ++e) {
    const LagWork& w = b.works[e];
    const int n_rows = H * w.n_due;
    uint8_t* flags = sel.data() + w.sel_offset;
    if (c.entries[e].exact_k) {
      std::vector<float> scores(static_cast<size_t>(n_rows) * w.lag);
      for (float& x : scores) x = ud(rng);
      const std::vector<uint8_t> f = select_reference(scores, n_rows, w.lag, w.keep);
      std::copy(f.begin(), f.end(), flags);
    } else if (n_rows > 0) {
      for (int64_t i = 0; i < static_cast<int64_t>(n_rows) * w.lag; ++i) {
        flags[i] = ud(rng) < 0.4f ? 1 : 0;
      }
      flags[0] = 1;  // a leading kept run that stays in place
    }
  }
  DeviceArray<uint8_t> gsel(sel);
  run_compact(cache, b, gsel, b.max_src + (c.loose_max ? 300 : 0));
  compact_reference(cache, sel, b);
  expect_same_pool(lagserve::testing::to_float(cache.gk->download()), cache.k, "K");
  expect_same_pool(lagserve::testing::to_float(cache.gv->download()), cache.v, "V");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, KvCompact,
    ::testing::Values(
        // n_due 0 with a tail: nothing moves; tail 0: end right after the due partitions.
        CompactCase{2, 64, {{19, 1, 16, 20, true}, {19, 0, 16, 40, true}, {0, 2, 32, 0, false},
                            {35, 3, 16, 5, true}}, true},
        CompactCase{2, 128, {{19, 3, 32, 40, true}, {19, 2, 128, 300, false}, {4, 1, 64, 1, true}},
                    false},
        CompactCase{3, 128, {{19, 2, 128, 150, true}, {16, 1, 32, 0, false}}, false},
        CompactCase{3, 64, {{19, 3, 16, 16, false}, {3, 0, 16, 7, false}, {16, 1, 32, 0, true}},
                    false},
        // head_dim % 8 != 0: 4-byte copies.
        CompactCase{1, 6, {{19, 2, 16, 17, true}, {1, 1, 16, 0, false}, {40, 3, 32, 33, true}},
                    true},
        CompactCase{8, 128, {{19, 20, 128, 200, true}, {20, 2, 16, 9, false}}, false}));

// ---- end to end ---------------------------------------------------------------

TEST(LagKernels, ScoreSelectCompactEndToEnd) {
  LAGSERVE_REQUIRE_GPU();
  for (const int d : {64, 128}) {
    const int H = 3, bs = 16;
    // {region, n_due, L, k, w, end}: per-request policies side by side.
    const std::vector<Entry> entries = {
        {24, 2, 32, 8, 1.0f, 24 + 3 * 32 + 9}, {16, 3, 16, 3, 0.5f, 16 + 4 * 16},
        {0, 1, 64, 16, 0.0f, 2 * 64 + 40},     {10, 0, 32, 8, 1.0f, 10 + 50},
        {40, 1, 128, 1, 2.0f, 40 + 2 * 128 + 3}};
    std::vector<int> lengths;
    for (const Entry& x : entries) lengths.push_back(x.end);
    std::mt19937 rng(41 + d);
    TestCache cache(H, bs, d, lengths, rng);
    cache.upload();
    Batch b(entries, H, d);
    const LagWork* works = b.upload(&cache);
    DeviceArray<float> scores(b.score_floats);
    DeviceArray<uint8_t> sel(b.sel_bytes);
    DeviceArray<bf16> scratch(b.scratch_elems);
    scores.poison();
    sel.poison();
    scratch.poison();
    lag_score(cache.gpu(), cache.gtables->get(), works, b.n_works(), b.max_due, b.max_lag,
              scores.get(), nullptr);
    lag_select(scores.get(), works, b.n_works(), H, b.max_due, b.max_lag, sel.get(), nullptr);
    kv_compact(cache.gpu(), cache.gtables->get(), works, b.n_works(), b.max_src, sel.get(),
               scratch.get(), nullptr);

    const std::vector<float> gpu_scores = scores.download();
    const std::vector<float> cpu_scores = score_reference(cache, b);
    expect_scores_match(gpu_scores, cpu_scores, b, H);
    std::vector<uint8_t> cpu_sel = batch_select_reference(cpu_scores, b, H);
    // A k-th and (k+1)-th score within fp32 rounding of each other may swap
    // between the two sides; then both sides must agree on the GPU's scores.
    for (const LagWork& w : b.works) {
      for (int row = 0; row < H * w.n_due && w.keep < w.lag; ++row) {
        const int64_t first = w.score_offset + static_cast<int64_t>(row) * w.lag;
        std::vector<float> s(cpu_scores.begin() + first, cpu_scores.begin() + first + w.lag);
        std::sort(s.begin(), s.end(), std::greater<float>());
        if (s[w.keep - 1] - s[w.keep] <= 1e-5f * s[0]) {
          const std::span<const float> g(gpu_scores.data() + first, w.lag);
          const std::vector<uint8_t> gsel = select_reference(g, 1, w.lag, w.keep);
          std::copy(gsel.begin(), gsel.end(),
                    cpu_sel.begin() + w.sel_offset + static_cast<int64_t>(row) * w.lag);
          std::printf("L %d row %d: near tie at the cut, selection taken from the GPU scores\n",
                      w.lag, row);
        }
      }
    }
    EXPECT_EQ(sel.download(), cpu_sel) << "head_dim " << d;
    compact_reference(cache, cpu_sel, b);
    expect_same_pool(lagserve::testing::to_float(cache.gk->download()), cache.k, "K");
    expect_same_pool(lagserve::testing::to_float(cache.gv->download()), cache.v, "V");
  }
}

}  // namespace
}  // namespace lagserve::kernels::cuda
