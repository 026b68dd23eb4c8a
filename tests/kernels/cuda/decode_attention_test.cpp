// decode_attention against the CPU reference (kernels/cpu paged_attention_reference)
// on the same bf16-rounded values: several sequences of different lengths in
// one launch (split-K and single-split), GQA groups 1 to 8, head_dim 16 to
// 128, shuffled block tables, NaN in every unused cache slot and output row.
// Masked: prefill chunks run as one item per row with a LagKV partition mask,
// against the reference given the same kernels::PartitionMask.
#include "kernels/cuda/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/paged_attention.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;

struct Case {
  int n_heads, n_kv_heads, head_dim;
  std::vector<int> ctx;  // keys per sequence
  int sm_count;          // drives the split length
};

class DecodeAttention : public ::testing::TestWithParam<Case> {};

TEST_P(DecodeAttention, MatchesCpuReference) {
  LAGSERVE_REQUIRE_GPU();
  const Case c = GetParam();
  const int bs = 16, d = c.head_dim, n_items = static_cast<int>(c.ctx.size());
  std::mt19937 rng(c.n_heads * 31 + d + n_items);
  std::normal_distribution<float> nd(0.f, 1.f);
  int total_blocks = 0;
  for (int len : c.ctx) total_blocks += (len + bs - 1) / bs;
  const int n_pool = total_blocks * 2 + 1;
  std::vector<int32_t> ids(n_pool - 1);
  std::iota(ids.begin(), ids.end(), 1);
  std::shuffle(ids.begin(), ids.end(), rng);

  const int64_t pool_elems = static_cast<int64_t>(n_pool) * c.n_kv_heads * bs * d;
  std::vector<float> kp(pool_elems, NAN), vp(pool_elems, NAN);
  kernels::PagedKv cpu_kv{kp.data(), vp.data(), c.n_kv_heads, bs, d};
  const int kv_dim = c.n_kv_heads * d, q_dim = c.n_heads * d;
  std::vector<int32_t> tables;
  std::vector<DecodeItem> items;
  std::vector<float> q(static_cast<size_t>(n_items) * q_dim);
  for (float& x : q) x = nd(rng);
  int next = 0;
  for (int i = 0; i < n_items; ++i) {
    const int nb = (c.ctx[i] + bs - 1) / bs;
    DecodeItem it;
    it.table_offset = static_cast<int32_t>(tables.size());
    it.ctx_len = c.ctx[i];
    it.row = n_items - 1 - i;  // rows need not follow items
    it.cached_len = c.ctx[i] - 1;  // a decode step's: the newest key not yet written
    tables.insert(tables.end(), ids.begin() + next, ids.begin() + next + nb);
    next += nb;
    std::vector<float> k(static_cast<size_t>(c.ctx[i]) * kv_dim), v(k.size());
    for (float& x : k) x = nd(rng);
    for (float& x : v) x = nd(rng);
    kernels::paged_kv_write(cpu_kv, tables.data() + it.table_offset, 0, c.ctx[i],
                            lagserve::testing::round_bf16(k).data(),
                            lagserve::testing::round_bf16(v).data(), kv_dim);
    items.push_back(it);
  }
  // The GPU pool holds the same values (NaN stays NaN through bf16).
  DeviceArray<bf16> gk(lagserve::testing::to_bf16(kp)), gv(lagserve::testing::to_bf16(vp));
  DeviceArray<int32_t> gtables(tables);
  DeviceArray<DecodeItem> gitems(items);
  DeviceArray<float> gq(q);
  DeviceArray<bf16> gout(static_cast<size_t>(n_items) * q_dim);
  gout.poison();
  int max_ctx = 0;
  int64_t total = 0;
  for (int len : c.ctx) max_ctx = std::max(max_ctx, len), total += len;
  const DecodePlan plan = decode_attention_plan(max_ctx, total, n_items, c.n_kv_heads, c.sm_count);
  DeviceArray<float> ws(decode_attention_workspace(plan, n_items, c.n_heads, d));
  ws.poison();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  PagedKvBf16 kv{gk.get(), gv.get(), c.n_kv_heads, bs, d};
  decode_attention(kv, gtables.get(), gitems.get(), n_items, plan, gq.get(), q_dim, gout.get(),
                   q_dim, c.n_heads, scale, /*selected=*/nullptr, ws.get(), nullptr);
  const std::vector<float> got = lagserve::testing::to_float(gout.download());

  // Launches that overlap (programmatic dependent launch, on a stream of its
  // own): queries A, B, A, B back to back through one workspace give each
  // the bits of its launch alone. A partial kernel that wrote the workspace
  // before its pdl_wait would hand the merge before it B's partials for A.
  {
    std::vector<float> q2(q.size());
    for (float& x : q2) x = nd(rng);
    DeviceArray<float> gq2(q2);
    DeviceArray<bf16> gout2(gout.size());
    decode_attention(kv, gtables.get(), gitems.get(), n_items, plan, gq2.get(), q_dim, gout2.get(),
                     q_dim, c.n_heads, scale, nullptr, ws.get(), nullptr);
    const std::vector<float> got2 = lagserve::testing::to_float(gout2.download());
    cudaStream_t st = nullptr;
    LAGSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const size_t n_out = gout.size();
    DeviceArray<bf16> outs(4 * n_out);  // launch r's output at r * n_out
    outs.poison();
    ws.poison();
    LAGSERVE_CUDA_CHECK(cudaDeviceSynchronize());  // st does not wait for the legacy stream
    for (int r = 0; r < 4; ++r) {
      decode_attention(kv, gtables.get(), gitems.get(), n_items, plan, r % 2 ? gq2.get() : gq.get(),
                       q_dim, outs.get() + r * n_out, q_dim, c.n_heads, scale, nullptr, ws.get(), st);
    }
    LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
    const std::vector<float> all = lagserve::testing::to_float(outs.download());
    for (int r = 0; r < 4; ++r) {
      const std::vector<float>& want = r % 2 ? got2 : got;
      EXPECT_EQ(std::memcmp(all.data() + r * n_out, want.data(), n_out * sizeof(float)), 0)
          << "overlapped launch " << r;
    }
    LAGSERVE_CUDA_CHECK(cudaStreamDestroy(st));
  }

  for (int i = 0; i < n_items; ++i) {
    const DecodeItem& it = items[i];
    std::vector<float> ref(q_dim);
    // q unrounded: the kernel reads it in fp32.
    kernels::paged_attention_reference(cpu_kv, tables.data() + it.table_offset, it.ctx_len,
                                       q.data() + static_cast<size_t>(it.row) * q_dim, q_dim,
                                       ref.data(), 1, c.n_heads, scale);
    const std::vector<float> mine(got.begin() + static_cast<size_t>(it.row) * q_dim,
                                  got.begin() + static_cast<size_t>(it.row + 1) * q_dim);
    EXPECT_LT(lagserve::testing::max_rel_err(mine, ref), 1e-2)
        << "item " << i << " ctx " << it.ctx_len << " split_len " << plan.split_len;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DecodeAttention,
    ::testing::Values(Case{9, 3, 64, {1, 17, 600, 3000}, 132},
                      Case{12, 2, 128, {5000, 1, 64, 513}, 132},
                      Case{12, 2, 128, {40000, 700}, 8},    // few SMs: long splits
                      Case{8, 8, 128, {100, 2048}, 132},     // no GQA
                      Case{8, 1, 64, {129, 4097}, 132},      // group of 8
                      Case{4, 2, 128, {31, 32, 33}, 132},
                      Case{4, 2, 16, {1, 300, 1500}, 132},   // the tiny test models
                      Case{6, 2, 32, {77, 1025}, 132},
                      // splits of 128: 235 to merge, more than a merge block's 128 threads
                      Case{4, 2, 16, {30000, 3}, 240}));

// One sequence's chunk: rows i = 0 .. n_rows-1 see cache indices
// [0, cache_len + 1 + i). n_partitions > 0: the mask region starts at
// mask_begin and holds n_partitions partitions of `lag` keys.
struct Seq {
  int cache_len, n_rows, mask_begin, n_partitions;
};
struct MaskCase {
  int n_heads, n_kv_heads, head_dim, lag, keep;  // keep: selected keys per partition and kv head
  std::vector<Seq> seqs;
  int sm_count;
  int split_len = 0;  // if set, the plan takes this split length (the case relies on it)
};

class DecodeAttentionMasked : public ::testing::TestWithParam<MaskCase> {};

TEST_P(DecodeAttentionMasked, MatchesCpuReference) {
  LAGSERVE_REQUIRE_GPU();
  const MaskCase c = GetParam();
  const int bs = 16, d = c.head_dim, n_seqs = static_cast<int>(c.seqs.size());
  const int kv_dim = c.n_kv_heads * d, q_dim = c.n_heads * d;
  std::mt19937 rng(c.n_heads * 131 + d * 7 + c.lag + c.keep + n_seqs);
  std::normal_distribution<float> nd(0.f, 1.f);
  int total_blocks = 0, total_rows = 0;
  for (const Seq& s : c.seqs) {
    ASSERT_LE(s.mask_begin + s.n_partitions * c.lag, s.cache_len) << "region past the cache";
    total_blocks += (s.cache_len + s.n_rows + bs - 1) / bs;
    total_rows += s.n_rows;
  }
  const int n_pool = total_blocks * 2 + 1;
  std::vector<int32_t> ids(n_pool - 1);
  std::iota(ids.begin(), ids.end(), 1);
  std::shuffle(ids.begin(), ids.end(), rng);
  const int64_t pool_elems = static_cast<int64_t>(n_pool) * c.n_kv_heads * bs * d;
  std::vector<float> kp(pool_elems, NAN), vp(pool_elems, NAN);
  kernels::PagedKv cpu_kv{kp.data(), vp.data(), c.n_kv_heads, bs, d};
  std::vector<float> q(static_cast<size_t>(total_rows) * q_dim);
  for (float& x : q) x = nd(rng);

  // Per sequence: block table, rows (later sequences first), flags, hide_upto.
  std::vector<int32_t> tables, table_offset(n_seqs), row_base(n_seqs), sel_offset(n_seqs, 0);
  std::vector<uint8_t> selected;
  std::vector<std::vector<int32_t>> hide_upto(n_seqs);
  std::vector<DecodeItem> items;
  int next = 0, rows_left = total_rows;
  for (int s = 0; s < n_seqs; ++s) {
    const Seq& sq = c.seqs[s];
    const int n_tokens = sq.cache_len + sq.n_rows, nb = (n_tokens + bs - 1) / bs;
    table_offset[s] = static_cast<int32_t>(tables.size());
    tables.insert(tables.end(), ids.begin() + next, ids.begin() + next + nb);
    next += nb;
    rows_left -= sq.n_rows;
    row_base[s] = rows_left;
    std::vector<float> k(static_cast<size_t>(n_tokens) * kv_dim), v(k.size());
    for (float& x : k) x = nd(rng);
    for (float& x : v) x = nd(rng);
    kernels::paged_kv_write(cpu_kv, tables.data() + table_offset[s], 0, n_tokens,
                            lagserve::testing::round_bf16(k).data(),
                            lagserve::testing::round_bf16(v).data(), kv_dim);
    const int np = sq.n_partitions, mask_len = np * c.lag;
    if (np > 0) {
      // Exactly `keep` keys of each partition selected, per kv head.
      sel_offset[s] = static_cast<int32_t>(selected.size());
      std::vector<int> perm(c.lag);
      for (int h = 0; h < c.n_kv_heads; ++h) {
        for (int r = 0; r < np; ++r) {
          std::iota(perm.begin(), perm.end(), 0);
          std::shuffle(perm.begin(), perm.end(), rng);
          std::vector<uint8_t> flags(c.lag, 0);
          for (int t = 0; t < c.keep; ++t) flags[perm[t]] = 1;
          selected.insert(selected.end(), flags.begin(), flags.end());
        }
      }
      // From nothing hidden (-1) on the first row to every partition on the
      // last, as a chunk crossing partition boundaries sees it.
      for (int i = 0; i < sq.n_rows; ++i) {
        const int upto = sq.n_rows == 1 ? np - 1 : i * (np + 1) / (sq.n_rows - 1) - 1;
        hide_upto[s].push_back(std::clamp(upto, -1, np - 1));
      }
    }
    for (int i = 0; i < sq.n_rows; ++i) {
      DecodeItem it;
      it.table_offset = table_offset[s];
      it.ctx_len = sq.cache_len + 1 + i;
      it.row = row_base[s] + i;
      if (np > 0) {  // hidden region [mask_begin, mask_begin + (hide_upto + 1) * lag)
        it.mask_begin = sq.mask_begin;
        it.mask_len = mask_len;
        it.hide_end = sq.mask_begin + (hide_upto[s][i] + 1) * c.lag;
        it.sel_offset = sel_offset[s];
      }
      items.push_back(it);
    }
  }
  std::shuffle(items.begin(), items.end(), rng);  // items need not follow sequences or rows
  const int n_items = static_cast<int>(items.size());

  DeviceArray<bf16> gk(lagserve::testing::to_bf16(kp)), gv(lagserve::testing::to_bf16(vp));
  DeviceArray<int32_t> gtables(tables);
  DeviceArray<DecodeItem> gitems(items);
  DeviceArray<uint8_t> gselected(selected);
  DeviceArray<float> gq(q);
  DeviceArray<bf16> gout(static_cast<size_t>(total_rows) * q_dim);
  gout.poison();
  int max_ctx = 0;
  int64_t total = 0;
  for (const DecodeItem& it : items) max_ctx = std::max(max_ctx, it.ctx_len), total += it.ctx_len;
  DecodePlan plan = decode_attention_plan(max_ctx, total, n_items, c.n_kv_heads, c.sm_count);
  if (c.split_len > 0) {  // a given split length (whole splits hidden)
    plan.split_len = c.split_len;
    plan.max_splits = (max_ctx + c.split_len - 1) / c.split_len;
  }
  DeviceArray<float> ws(decode_attention_workspace(plan, n_items, c.n_heads, d));
  ws.poison();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  PagedKvBf16 kv{gk.get(), gv.get(), c.n_kv_heads, bs, d};
  decode_attention(kv, gtables.get(), gitems.get(), n_items, plan, gq.get(), q_dim, gout.get(),
                   q_dim, c.n_heads, scale, gselected.get(), ws.get(), nullptr);
  const std::vector<float> got = lagserve::testing::to_float(gout.download());

  for (int s = 0; s < n_seqs; ++s) {
    const Seq& sq = c.seqs[s];
    const kernels::PartitionMask mask{sq.mask_begin, sq.n_partitions, c.lag,
                                      selected.data() + sel_offset[s], hide_upto[s].data()};
    const size_t n_out = static_cast<size_t>(sq.n_rows) * q_dim;
    const float* qs = q.data() + static_cast<size_t>(row_base[s]) * q_dim;
    std::vector<float> ref(n_out), plain(n_out);
    kernels::paged_attention_reference(cpu_kv, tables.data() + table_offset[s], sq.cache_len + 1,
                                       qs, q_dim, ref.data(), sq.n_rows, c.n_heads, scale,
                                       sq.n_partitions > 0 ? &mask : nullptr);
    const auto first = got.begin() + static_cast<size_t>(row_base[s]) * q_dim;
    for (int i = 0; i < sq.n_rows; ++i) {
      const std::vector<float> mine(first + static_cast<size_t>(i) * q_dim,
                                    first + static_cast<size_t>(i + 1) * q_dim);
      const std::vector<float> want(ref.begin() + static_cast<size_t>(i) * q_dim,
                                    ref.begin() + static_cast<size_t>(i + 1) * q_dim);
      EXPECT_LT(lagserve::testing::max_rel_err(mine, want), 1e-2)
          << "seq " << s << " row " << i << " ctx " << sq.cache_len + 1 + i << " hide_upto "
          << (sq.n_partitions > 0 ? hide_upto[s][i] : -1) << " split_len " << plan.split_len;
    }
    if (sq.n_partitions > 0 && c.keep < c.lag) {
      // The mask must matter, or the comparison above proves nothing.
      kernels::paged_attention_reference(cpu_kv, tables.data() + table_offset[s],
                                         sq.cache_len + 1, qs, q_dim, plain.data(), sq.n_rows,
                                         c.n_heads, scale);
      EXPECT_GT(lagserve::testing::max_rel_err(plain, ref), 5e-2) << "seq " << s;
    }
  }
}

// The split plan (host code, no GPU needed): lengths the kernels accept
// (multiples of 64, 128 to 512 keys), splits that cover the longest item, and
// of the lengths allowed the one whose blocks cost least in whole waves of two
// blocks per multiprocessor (header: decode_attention_plan), here recomputed
// for batches from one short sequence to 64 long ones.
TEST(DecodeAttentionPlan, CoversTheItemsAndFillsWholeWaves) {
  for (const int sms : {8, 132}) {
    for (const auto& [n_items, ctx] : {std::pair{1, 100}, std::pair{1, 4097}, std::pair{32, 8448},
                                       std::pair{32, 32768}, std::pair{64, 131072}, std::pair{7, 1000}}) {
      SCOPED_TRACE(::testing::Message() << n_items << " items of " << ctx << " keys, " << sms << " SMs");
      const int n_kv = 2;
      const DecodePlan plan = decode_attention_plan(ctx, static_cast<int64_t>(ctx) * n_items, n_items, n_kv, sms);
      EXPECT_EQ(plan.split_len % 64, 0);
      EXPECT_GE(plan.split_len, 128);
      EXPECT_LE(plan.split_len, 512);
      EXPECT_GE(static_cast<int64_t>(plan.max_splits) * plan.split_len, ctx);
      EXPECT_LT(static_cast<int64_t>(plan.max_splits - 1) * plan.split_len, ctx);
      auto cost = [&](int64_t len) {
        const int64_t blocks = int64_t{n_items} * ((ctx + len - 1) / len) * n_kv, wave = 2 * sms;
        return (blocks + wave - 1) / wave * (len + 64);
      };
      for (int64_t len = 128; len <= 512; len += 128) {
        EXPECT_LE(cost(plan.split_len), cost(len)) << "split " << plan.split_len << " against " << len;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DecodeAttentionMasked,
    ::testing::Values(
        MaskCase{3, 3, 64, 16, 4, {{200, 24, 4, 8}}, 132},          // group 1
        MaskCase{6, 2, 128, 32, 8, {{1000, 40, 4, 6}}, 8},          // group 3, long splits
        MaskCase{12, 2, 16, 16, 2, {{300, 16, 4, 5}}, 132},         // group 6, tiny head
        MaskCase{12, 2, 128, 16, 4, {{700, 33, 8, 12}, {90, 1, 4, 2}}, 132},  // sel_offset > 0
        MaskCase{2, 2, 32, 32, 16, {{150, 5, 4, 3}}, 132},
        // Masked and unmasked items (decode rows) in one launch.
        MaskCase{6, 2, 64, 32, 4,
                 {{64, 1, 0, 0}, {500, 20, 4, 4}, {3000, 1, 0, 0}, {260, 10, 36, 3}}, 132},
        MaskCase{6, 1, 16, 32, 8, {{400, 12, 4, 6}, {50, 1, 0, 0}}, 132},
        // keep 0 and the region on split boundaries: whole splits hidden (m = -inf).
        MaskCase{4, 2, 128, 32, 0, {{300, 8, 64, 4}}, 132, 64}));

}  // namespace
}  // namespace lagserve::kernels::cuda
