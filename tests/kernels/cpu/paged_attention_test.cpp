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

INSTANTIATE_TEST_SUITE_P(
    Shapes, PagedAttention,
    ::testing::Values(Shape{1, 1, 2, 1, 0, 1}, Shape{4, 4, 16, 16, 0, 37},
                      Shape{9, 3, 64, 16, 100, 1}, Shape{9, 3, 64, 16, 33, 20},
                      Shape{8, 2, 32, 7, 50, 13}, Shape{12, 2, 128, 32, 300, 5},
                      Shape{2, 1, 8, 3, 0, 64}));

}  // namespace
}  // namespace lagserve::kernels
