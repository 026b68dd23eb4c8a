// decode_attention against the CPU reference (kernels/cpu paged_attention_reference)
// on the same bf16-rounded values: several sequences of different lengths in
// one launch (split-K and single-split), GQA groups 1 to 8, head_dim 16 to
// 128, shuffled block tables, NaN in every unused cache slot and output row.
#include "kernels/cuda/decode_attention.h"

#include <algorithm>
#include <cmath>
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
  const DecodePlan plan = decode_attention_plan(max_ctx, total, c.n_kv_heads, c.sm_count);
  DeviceArray<float> ws(decode_attention_workspace(plan, n_items, c.n_heads, d));
  ws.poison();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  PagedKvBf16 kv{gk.get(), gv.get(), c.n_kv_heads, bs, d};
  decode_attention(kv, gtables.get(), gitems.get(), n_items, plan, gq.get(), q_dim, gout.get(),
                   q_dim, c.n_heads, scale, ws.get(), nullptr);
  const std::vector<float> got = lagserve::testing::to_float(gout.download());

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
                      Case{6, 2, 32, {77, 1025}, 132}));

}  // namespace
}  // namespace lagserve::kernels::cuda
