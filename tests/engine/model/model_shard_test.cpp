// model::shard_model: the shards' products recombine into the whole model's
// (column-parallel Q/K/V and gate/up concatenate, row-parallel output and
// down projections sum), on a Qwen2 model with QKV bias, with fewer ranks
// than KV heads and with more (each KV head then replicated); and the splits
// that cannot be made are refused with what does not divide.
#include "engine/model/model_shard.h"

#include <random>

#include <gtest/gtest.h>

namespace lagserve {
namespace {

// y = W x for a row-major [rows, cols] W.
std::vector<double> matvec(const std::vector<float>& w, const std::vector<float>& x) {
  const size_t cols = x.size(), rows = w.size() / cols;
  std::vector<double> y(rows, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) y[r] += static_cast<double>(w[r * cols + c]) * x[c];
  }
  return y;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> slice(const std::vector<float>& v, size_t begin, size_t n) {
  return {v.begin() + begin, v.begin() + begin + n};
}

std::unique_ptr<model::Model> tiny_qwen2() {
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

class ShardSizes : public ::testing::TestWithParam<int32_t> {};

TEST_P(ShardSizes, ShardsRecombineIntoTheWholeLayer) {
  auto m = tiny_qwen2();  // 4 query heads, 2 KV heads, FFN 96
  ASSERT_NE(m, nullptr);
  const model::ModelConfig& c = m->config;
  ASSERT_TRUE(c.qkv_bias);
  ASSERT_EQ(c.n_kv_heads, 2);
  const int32_t N = GetParam();
  const int32_t replicas = N > c.n_kv_heads ? N / c.n_kv_heads : 1;
  std::vector<std::unique_ptr<model::Model>> shards;
  for (int32_t r = 0; r < N; ++r) {
    auto s = model::shard_model(*m, r, N);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ((*s)->config.n_heads, c.n_heads / N);
    EXPECT_EQ((*s)->config.n_kv_heads, c.n_kv_heads * replicas / N);
    EXPECT_EQ((*s)->config.d_ff, c.d_ff / N);
    EXPECT_EQ((*s)->config.d_model, c.d_model);
    const model::KvHeadShare share = model::kv_heads_of_rank(c, r, N);
    EXPECT_EQ(share.count, (*s)->config.n_kv_heads);
    EXPECT_EQ(share.first, r / replicas * share.count);
    EXPECT_EQ(share.primary, r % replicas == 0);
    shards.push_back(std::move(*s));
  }
  const size_t q = c.q_dim(), kv = c.kv_dim(), ff = c.d_ff;
  const std::vector<float> h = random_vector(c.d_model, 1), attn = random_vector(q, 2), act = random_vector(ff, 3);
  for (size_t l = 0; l < m->weights.layers.size(); ++l) {
    const model::LayerWeights& W = m->weights.layers[l];
    std::vector<double> qkv = matvec(W.wqkv, h), gate_up = matvec(W.w_gate_up, h);
    for (size_t i = 0; i < qkv.size(); ++i) qkv[i] += W.bqkv[i];
    const std::vector<double> o = matvec(W.wo, attn), down = matvec(W.w_down, act);
    std::vector<double> o_sum(c.d_model, 0.0), down_sum(c.d_model, 0.0);
    for (int32_t r = 0; r < N; ++r) {
      const model::LayerWeights& S = shards[r]->weights.layers[l];
      const size_t qs = q / N, kvs = kv * replicas / N, ffs = ff / N, kv0 = r / replicas * kvs;
      std::vector<double> part = matvec(S.wqkv, h);
      ASSERT_EQ(part.size(), qs + 2 * kvs);
      for (size_t i = 0; i < part.size(); ++i) part[i] += S.bqkv[i];
      // q, k and v rows of rank r are its heads' rows of the whole product;
      // its query heads are those of its KV head's group.
      for (size_t i = 0; i < qs; ++i) EXPECT_DOUBLE_EQ(part[i], qkv[r * qs + i]);
      EXPECT_EQ(r * qs / c.head_dim / (c.n_heads / c.n_kv_heads), kv0 / c.head_dim);
      for (size_t i = 0; i < kvs; ++i) {
        EXPECT_DOUBLE_EQ(part[qs + i], qkv[q + kv0 + i]);
        EXPECT_DOUBLE_EQ(part[qs + kvs + i], qkv[q + kv + kv0 + i]);
      }
      const std::vector<double> gu = matvec(S.w_gate_up, h);
      for (size_t i = 0; i < ffs; ++i) {
        EXPECT_DOUBLE_EQ(gu[i], gate_up[r * ffs + i]);
        EXPECT_DOUBLE_EQ(gu[ffs + i], gate_up[ff + r * ffs + i]);
      }
      const std::vector<double> op = matvec(S.wo, slice(attn, r * qs, qs));
      const std::vector<double> dp = matvec(S.w_down, slice(act, r * ffs, ffs));
      for (int32_t i = 0; i < c.d_model; ++i) {
        o_sum[i] += op[i];
        down_sum[i] += dp[i];
      }
    }
    for (int32_t i = 0; i < c.d_model; ++i) {
      EXPECT_NEAR(o_sum[i], o[i], 1e-9 * (1 + std::abs(o[i])));
      EXPECT_NEAR(down_sum[i], down[i], 1e-9 * (1 + std::abs(down[i])));
    }
    EXPECT_EQ(shards[1]->weights.layers[l].attn_norm, W.attn_norm);
  }
  EXPECT_EQ(shards[1]->weights.tok_embd, m->weights.tok_embd);
}

// 2 ranks: one KV head each; 4: each KV head on two ranks.
INSTANTIATE_TEST_SUITE_P(Sizes, ShardSizes, ::testing::Values(2, 4));

TEST(ModelShard, RefusesSplitsThatDoNotDivide) {
  auto m = tiny_qwen2();  // 4 query heads, 2 KV heads, FFN 96
  ASSERT_NE(m, nullptr);
  auto s = model::shard_model(*m, 0, 3);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("does not divide the model's 4 query heads"), std::string::npos) << s.status();
  model::ModelConfig kv4 = m->config;  // 12 query heads, 4 KV heads: 6 ranks fit neither way
  kv4.n_heads = 12;
  kv4.n_kv_heads = 4;
  absl::Status st = model::check_tensor_parallel(kv4, 6);
  EXPECT_NE(st.message().find("neither divides the model's 4 KV heads nor is a multiple"), std::string::npos) << st;
  EXPECT_TRUE(model::check_tensor_parallel(kv4, 2).ok());
  model::ModelConfig odd_ff = m->config;
  odd_ff.d_ff = 97;
  st = model::check_tensor_parallel(odd_ff, 2);
  EXPECT_NE(st.message().find("FFN width 97"), std::string::npos) << st;
  EXPECT_FALSE(model::shard_model(*m, 2, 2).ok());
  EXPECT_FALSE(model::check_tensor_parallel(m->config, 0).ok());
  EXPECT_TRUE(model::check_tensor_parallel(m->config, 2).ok());
  EXPECT_TRUE(model::check_tensor_parallel(m->config, 4).ok());  // KV heads replicated
}

}  // namespace
}  // namespace lagserve
