// paged_attention against its token-by-token reference and against dense
// attention over an unpaged copy, with shuffled block tables, GQA, several
// block sizes, and NaN in every unused cache slot.
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/thread_pool.h"

namespace lagserve::kernels {
namespace {

struct Shape {
  int n_heads, n_kv_heads, head_dim, block_size, cache_len, n_new;
};

class PagedAttention : public ::testing::TestWithParam<Shape> {};

TEST_P(PagedAttention, MatchesReferenceAndDense) {
  const Shape s = GetParam();
  std::mt19937 rng(s.n_heads * 131 + s.block_size * 7 + s.cache_len);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int total = s.cache_len + s.n_new;
  const int n_seq_blocks = (total + s.block_size - 1) / s.block_size;
  const int n_pool_blocks = n_seq_blocks * 2 + 1;
  // Shuffled, non-contiguous blocks, never block 0.
  std::vector<int32_t> ids(n_pool_blocks - 1);
  std::iota(ids.begin(), ids.end(), 1);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> table(ids.begin(), ids.begin() + n_seq_blocks);

  const int64_t pool_floats =
      static_cast<int64_t>(n_pool_blocks) * s.n_kv_heads * s.block_size * s.head_dim;
  std::vector<float> kp(pool_floats, std::numeric_limits<float>::quiet_NaN());
  std::vector<float> vp(pool_floats, std::numeric_limits<float>::quiet_NaN());
  PagedKv kv{kp.data(), vp.data(), s.n_kv_heads, s.block_size, s.head_dim};

  const int kv_dim = s.n_kv_heads * s.head_dim, q_dim = s.n_heads * s.head_dim;
  std::vector<float> k(static_cast<size_t>(total) * kv_dim), v(k.size()),
      q(static_cast<size_t>(s.n_new) * q_dim);
  for (float& x : k) x = nd(rng);
  for (float& x : v) x = nd(rng);
  for (float& x : q) x = nd(rng);
  // Write in two pieces: the existing cache, then the new tokens.
  paged_kv_write(kv, table.data(), 0, s.cache_len, k.data(), v.data(), kv_dim);
  paged_kv_write(kv, table.data(), s.cache_len, s.n_new, k.data() + s.cache_len * kv_dim,
                 v.data() + s.cache_len * kv_dim, kv_dim);

  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN()), ref(q.size());
  ThreadPool pool(3);
  paged_attention(kv, table.data(), s.cache_len + 1, q.data(), q_dim, out.data(), s.n_new,
                  s.n_heads, scale, &pool);
  paged_attention_reference(kv, table.data(), s.cache_len + 1, q.data(), q_dim, ref.data(),
                            s.n_new, s.n_heads, scale);
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_FALSE(std::isnan(out[i])) << "index " << i;
    ASSERT_NEAR(out[i], ref[i], 1e-5f * (1 + std::fabs(ref[i]))) << "index " << i;
  }
  // Dense attention on the unpaged K/V, written independently of the cache.
  const int group = s.n_heads / s.n_kv_heads;
  for (int i = 0; i < s.n_new; ++i) {
    const int ctx = s.cache_len + i + 1;
    for (int h = 0; h < s.n_heads; ++h) {
      std::vector<double> w(ctx);
      double mx = -1e300, sum = 0;
      for (int j = 0; j < ctx; ++j) {
        double dot = 0;
        for (int d = 0; d < s.head_dim; ++d) {
          dot += q[i * q_dim + h * s.head_dim + d] * k[j * kv_dim + (h / group) * s.head_dim + d];
        }
        mx = std::max(mx, w[j] = dot * scale);
      }
      for (double& x : w) sum += (x = std::exp(x - mx));
      for (int d = 0; d < s.head_dim; ++d) {
        double acc = 0;
        for (int j = 0; j < ctx; ++j) acc += w[j] * v[j * kv_dim + (h / group) * s.head_dim + d];
        const float want = static_cast<float>(acc / sum);
        ASSERT_NEAR(out[(i * s.n_heads + h) * s.head_dim + d], want, 1e-5f * (1 + std::fabs(want)));
      }
    }
  }
}

// With a partition mask: fast path equals the reference, and keys hidden from
// every query have no influence at all (overwriting them changes nothing).
class PagedAttentionMask : public ::testing::TestWithParam<Shape> {};

TEST_P(PagedAttentionMask, PartitionMaskHidesKeys) {
  const Shape s = GetParam();
  const int total = s.cache_len + s.n_new;
  const int lag = 3, n_part = std::min(2, total / lag);
  ASSERT_GT(n_part, 0) << "shape too short for a partition";
  std::mt19937 rng(s.head_dim * 17 + total);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int n_blocks = (total + s.block_size - 1) / s.block_size + 1;
  std::vector<int32_t> table(n_blocks - 1);
  std::iota(table.begin(), table.end(), 1);
  std::shuffle(table.begin(), table.end(), rng);
  const int64_t pool_floats = static_cast<int64_t>(n_blocks) * s.n_kv_heads * s.block_size * s.head_dim;
  std::vector<float> kp(pool_floats, std::numeric_limits<float>::quiet_NaN()), vp = kp;
  PagedKv kv{kp.data(), vp.data(), s.n_kv_heads, s.block_size, s.head_dim};
  const int kv_dim = s.n_kv_heads * s.head_dim, q_dim = s.n_heads * s.head_dim;
  std::vector<float> k(static_cast<size_t>(total) * kv_dim), v(k.size()), q(static_cast<size_t>(s.n_new) * q_dim);
  for (float& x : k) x = nd(rng);
  for (float& x : v) x = nd(rng);
  for (float& x : q) x = nd(rng);
  paged_kv_write(kv, table.data(), 0, total, k.data(), v.data(), kv_dim);

  PartitionMask mask;
  mask.begin = std::max(0, s.cache_len - lag);
  mask.n_partitions = std::min(n_part, (total - mask.begin) / lag);
  ASSERT_GT(mask.n_partitions, 0);
  mask.lag = lag;
  std::vector<uint8_t> selected(static_cast<size_t>(s.n_kv_heads) * mask.n_partitions * lag);
  for (auto& b : selected) b = rng() % 3 == 0;
  // As in LagKV, a query hides unselected keys only of partitions that end
  // before it (so it always sees itself); the first query hides nothing.
  const int region_end = mask.begin + mask.n_partitions * lag;
  std::vector<int32_t> hide_upto(s.n_new);
  for (int i = 0; i < s.n_new; ++i) {
    hide_upto[i] = i > 0 && s.cache_len + i >= region_end ? mask.n_partitions - 1 : -1;
  }
  mask.selected = selected.data();
  mask.hide_upto = hide_upto.data();

  const float scale = 0.25f;
  std::vector<float> out(q.size()), ref(q.size()), out2(q.size());
  ThreadPool pool(2);
  paged_attention(kv, table.data(), s.cache_len + 1, q.data(), q_dim, out.data(), s.n_new,
                  s.n_heads, scale, &pool, &mask);
  paged_attention_reference(kv, table.data(), s.cache_len + 1, q.data(), q_dim, ref.data(),
                            s.n_new, s.n_heads, scale, &mask);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5f * (1 + std::fabs(ref[i])));
  // Overwrite hidden keys' K and V (in the cache) with large values: queries
  // 1.. hide them and must not change.
  for (int h = 0; h < s.n_kv_heads; ++h) {
    for (int off = 0; off < mask.n_partitions * lag; ++off) {
      if (selected[h * mask.n_partitions * lag + off]) continue;
      const int j = mask.begin + off;
      const int64_t at = kv.slot_offset(table[j / s.block_size], h, j % s.block_size);
      for (int d = 0; d < s.head_dim; ++d) kp[at + d] = vp[at + d] = 50.f;
    }
  }
  paged_attention(kv, table.data(), s.cache_len + 1, q.data(), q_dim, out2.data(), s.n_new,
                  s.n_heads, scale, &pool, &mask);
  int n_checked = 0;
  for (int i = 0; i < s.n_new; ++i) {
    if (hide_upto[i] < 0) continue;
    ++n_checked;
    for (int c = 0; c < q_dim; ++c) {
      const float a = out[i * q_dim + c], b = out2[i * q_dim + c];
      ASSERT_NEAR(b, a, 1e-5f * (1 + std::fabs(a))) << "query " << i;
    }
  }
  if (s.n_new > 1) EXPECT_GT(n_checked, 0);
}

// The shapes above with room for at least one partition of 3 keys.
INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttentionMask,
    ::testing::Values(Shape{4, 4, 16, 16, 0, 37}, Shape{9, 3, 64, 16, 100, 1},
                      Shape{9, 3, 64, 16, 33, 20}, Shape{8, 2, 32, 7, 50, 13},
                      Shape{12, 2, 128, 32, 300, 5}, Shape{2, 1, 8, 3, 0, 64}));

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttention,
    ::testing::Values(Shape{1, 1, 2, 1, 0, 1}, Shape{4, 4, 16, 16, 0, 37},
                      Shape{9, 3, 64, 16, 100, 1}, Shape{9, 3, 64, 16, 33, 20},
                      Shape{8, 2, 32, 7, 50, 13}, Shape{12, 2, 128, 32, 300, 5},
                      Shape{2, 1, 8, 3, 0, 64}));

}  // namespace
}  // namespace lagserve::kernels
