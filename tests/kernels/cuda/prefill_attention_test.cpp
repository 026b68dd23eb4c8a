// prefill_attention against the CPU reference (kernels/cpu paged_attention_reference)
// on the same bf16-rounded values: head_dim 64 and 128, GQA groups 1, 3 and 6,
// block sizes 16 and 32, decode-sized to several-CTA query counts, with and
// without a LagKV partition mask; shuffled block tables (never block 0), NaN in
// every unused cache slot, in the padding of q's rows and in the output.
#include "kernels/cuda/prefill_attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/paged_attention.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;
using lagserve::testing::max_rel_err;
using lagserve::testing::round_bf16;
using lagserve::testing::to_bf16;
using lagserve::testing::to_float;

struct Case {
  int head_dim, group, block_size, cache_len, n_q;
  bool masked;
};

// Runs one case on the GPU and compares with the reference: every row, or
// (sampled_rows non-empty, no mask) only those query rows.
void check_case(const Case& c, const std::vector<int>& sampled_rows = {}) {
  const int n_kv = c.group == 3 ? 3 : 2;  // 9/3 like SmolLM2, else 2 kv heads
  const int n_heads = n_kv * c.group, d = c.head_dim, bs = c.block_size;
  const int total = c.cache_len + c.n_q, ctx_first = c.cache_len + 1;
  std::mt19937 rng(d * 1009 + c.group * 101 + bs * 13 + c.cache_len * 7 + c.n_q * 3 + c.masked);
  std::normal_distribution<float> nd(0.f, 1.f);

  const int n_seq_blocks = (total + bs - 1) / bs;
  const int n_pool = n_seq_blocks * 2 + 1;
  std::vector<int32_t> ids(n_pool - 1);
  std::iota(ids.begin(), ids.end(), 1);
  std::shuffle(ids.begin(), ids.end(), rng);
  const std::vector<int32_t> table(ids.begin(), ids.begin() + n_seq_blocks);

  const int64_t pool_elems = static_cast<int64_t>(n_pool) * n_kv * bs * d;
  std::vector<float> kp(pool_elems, NAN), vp(pool_elems, NAN);
  kernels::PagedKv cpu_kv{kp.data(), vp.data(), n_kv, bs, d};
  const int kv_dim = n_kv * d, q_dim = n_heads * d;
  const int64_t q_stride = q_dim + 8;  // padded rows: the padding is NaN and never read
  std::vector<float> k(static_cast<size_t>(total) * kv_dim), v(k.size());
  for (float& x : k) x = nd(rng);
  for (float& x : v) x = nd(rng);
  kernels::paged_kv_write(cpu_kv, table.data(), 0, total, round_bf16(k).data(),
                          round_bf16(v).data(), kv_dim);
  std::vector<float> q(static_cast<size_t>(c.n_q) * q_stride, NAN);
  for (int i = 0; i < c.n_q; ++i) {
    for (int e = 0; e < q_dim; ++e) q[i * q_stride + e] = 1.5f * nd(rng);  // peakier softmax
  }
  const std::vector<float> q_bf16 = round_bf16(q);  // what the kernel multiplies with

  // Mask: region from key 3, whole partitions up to the end of the cache;
  // lag / 4 keys of each partition selected per kv head.
  const int lag = bs == 16 ? 16 : 32, begin = 3;
  const int n_part = c.masked ? std::max(0, (total - begin) / lag) : 0;
  std::vector<uint8_t> selected(std::max(1, n_kv * n_part * lag), 0);
  std::vector<int32_t> hide_upto(c.n_q, -1);
  if (c.masked) {
    std::vector<int> perm(lag);
    std::iota(perm.begin(), perm.end(), 0);
    for (int h = 0; h < n_kv; ++h) {
      for (int r = 0; r < n_part; ++r) {
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int s = 0; s < lag / 4; ++s) selected[(h * n_part + r) * lag + perm[s]] = 1;
      }
    }
    std::uniform_int_distribution<int> pick(-1, std::max(-1, n_part - 1));
    for (int32_t& x : hide_upto) x = pick(rng);
  }
  const kernels::PartitionMask cpu_mask{begin, n_part, lag, selected.data(), hide_upto.data()};

  DeviceArray<bf16> gk(to_bf16(kp)), gv(to_bf16(vp));  // NaN stays NaN through bf16
  DeviceArray<int32_t> gtable(table);
  DeviceArray<float> gq(q);
  DeviceArray<uint8_t> gselected(selected);
  DeviceArray<int32_t> ghide(hide_upto);
  DeviceArray<bf16> gout(static_cast<size_t>(c.n_q) * q_dim);
  gout.poison();
  const PartitionMaskGpu gpu_mask{begin, n_part, lag, gselected.get(), ghide.get()};
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const PagedKvBf16 kv{gk.get(), gv.get(), n_kv, bs, d};
  prefill_attention(kv, gtable.get(), ctx_first, gq.get(), q_stride, gout.get(), c.n_q, n_heads,
                    scale, c.masked ? &gpu_mask : nullptr, nullptr);
  const std::vector<float> got = to_float(gout.download());

  if (sampled_rows.empty()) {
    std::vector<float> ref(got.size());
    kernels::paged_attention_reference(cpu_kv, table.data(), ctx_first, q_bf16.data(), q_stride,
                                       ref.data(), c.n_q, n_heads, scale,
                                       c.masked ? &cpu_mask : nullptr);
    EXPECT_LT(max_rel_err(got, ref), 1e-2);
    return;
  }
  ASSERT_FALSE(c.masked) << "sampled rows take no mask (hide_upto is indexed by row)";
  for (int i : sampled_rows) {
    std::vector<float> ref(q_dim);
    kernels::paged_attention_reference(cpu_kv, table.data(), ctx_first + i,
                                       q_bf16.data() + i * q_stride, q_stride, ref.data(), 1,
                                       n_heads, scale);
    const std::vector<float> mine(got.begin() + static_cast<size_t>(i) * q_dim,
                                  got.begin() + static_cast<size_t>(i + 1) * q_dim);
    EXPECT_LT(max_rel_err(mine, ref), 1e-2) << "query row " << i;
  }
}

struct Lengths {
  int cache_len, n_q;
};

using Param = std::tuple<int, int, int, Lengths, bool>;  // head_dim, group, block, lengths, mask

class PrefillAttention : public ::testing::TestWithParam<Param> {};

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto& [d, group, bs, len, masked] = info.param;
  return "d" + std::to_string(d) + "_g" + std::to_string(group) + "_bs" + std::to_string(bs) +
         "_cache" + std::to_string(len.cache_len) + "_nq" + std::to_string(len.n_q) +
         (masked ? "_mask" : "_nomask");
}

TEST_P(PrefillAttention, MatchesCpuReference) {
  LAGSERVE_REQUIRE_GPU();
  const auto& [d, group, bs, len, masked] = GetParam();
  check_case(Case{d, group, bs, len.cache_len, len.n_q, masked});
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PrefillAttention,
    ::testing::Combine(::testing::Values(64, 128), ::testing::Values(1, 3, 6),
                       ::testing::Values(16, 32),
                       ::testing::Values(Lengths{0, 1}, Lengths{0, 37}, Lengths{0, 200},
                                         Lengths{100, 1}, Lengths{100, 77}, Lengths{1000, 300},
                                         Lengths{37, 129}, Lengths{2000, 1}),
                       ::testing::Bool()),
    param_name);

// A long prompt in several waves of CTAs (Qwen2.5-1.5B heads); the reference
// is run for sampled rows only: the first ones, both sides of CTA boundaries,
// the last (longest) ones and some at random.
TEST(PrefillAttentionLong, Prompt4096Qwen) {
  LAGSERVE_REQUIRE_GPU();
  const int n_q = 4096;
  std::vector<int> rows = {0, 1, 2, 3, 7, 31, 32, 63, 64, 127, 128, 129, 255, 256, 2047, 2048};
  for (int i = n_q - 40; i < n_q; ++i) rows.push_back(i);
  std::mt19937 rng(4096);
  std::uniform_int_distribution<int> pick(0, n_q - 1);
  for (int s = 0; s < 24; ++s) rows.push_back(pick(rng));
  check_case(Case{128, 6, 16, 0, n_q, false}, rows);
}

}  // namespace
}  // namespace lagserve::kernels::cuda
