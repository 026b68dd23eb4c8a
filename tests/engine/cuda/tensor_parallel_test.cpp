// Tensor-parallel serving (issue 9) on the one GPU lent: at N = 1 through
// NCCL, the same logits and kept positions as the backend without TP, bit for
// bit; at N = 2, 3 and 4 (KV heads replicated), every rank on the one GPU
// joined by the single-device stand-in for NCCL (tp_comm.h), the sharded
// model against the whole one:
// the layers' partial sums are added in another order, so the logits agree
// within bf16 tolerance and top-1 on >= 99% of positions with the policy off,
// and >= 97% of positions and kept slots with it on. Also device sampling
// through rank 0, and the errors a user can meet.
#include "engine/backend/cuda/tensor_parallel.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include <gtest/gtest.h>

#include "engine/backend/cuda/tp_comm.h"
#include "engine/model/model_shard.h"
#include "tests/engine/backend/agreement.h"
#include "tests/engine/backend/engine_incremental.h"
#include "tests/engine/cuda/require_gpu.h"

namespace lagserve {
namespace {

using testing_util::argmax;

using testing_util::engine_forward;
using testing_util::ForwardRun;

backend::CudaBackendOptions options(int64_t cache_mb) {
  backend::CudaBackendOptions opt;
  opt.kv_cache_bytes = cache_mb << 20;
  opt.poison_kv = true;
  opt.max_seqs = 16;  // above the skinny GEMMs' limit: both backends take cuBLAS
  return opt;
}

std::unique_ptr<backend::Backend> tp_backend(const model::Model& m, int size, bool single_device,
                                             int64_t cache_mb = 256) {
  backend::TensorParallelOptions tp;
  tp.size = size;
  tp.single_device = single_device;
  auto be = backend::make_tensor_parallel_backend(m, options(cache_mb), tp);
  EXPECT_TRUE(be.ok()) << be.status();
  return be.ok() ? std::move(*be) : nullptr;
}

std::unique_ptr<backend::Backend> plain_backend(const model::Model& m, int64_t cache_mb = 256) {
  auto be = backend::make_cuda_backend(m, options(cache_mb));
  EXPECT_TRUE(be.ok()) << be.status();
  return be.ok() ? std::move(*be) : nullptr;
}

std::unique_ptr<model::Model> default_model() {
  const std::string path = testing_util::conformance_model_path("default");
  if (path.empty()) return nullptr;
  auto m = model::load_model(path);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

class Policies : public ::testing::TestWithParam<const char*> {};

// N = 1 through NCCL: the TP path (all-reduce, rank 0's logits) adds nothing.
TEST_P(Policies, OneRankGivesTheSameBitsAsNoTensorParallelism) {
  REQUIRE_GPU();
  if (!backend::cuda::nccl_available()) GTEST_SKIP() << "built without NCCL";
  auto m = default_model();
  if (m == nullptr) GTEST_SKIP() << "the default model is not cached (scripts/fetch_model.py)";
  auto policy = kv::LagPolicy::parse(GetParam());
  ASSERT_TRUE(policy.ok()) << policy.status();
  const std::vector<int32_t> ids = testing_util::docs_text_ids(*m, 800);
  ForwardRun plain, tp;
  {
    auto be = plain_backend(*m);
    ASSERT_NE(be, nullptr);
    plain = engine_forward(*be, ids, *policy, 160, 100);
  }
  {
    auto be = tp_backend(*m, 1, /*single_device=*/false);
    ASSERT_NE(be, nullptr);
    tp = engine_forward(*be, ids, *policy, 160, 100);
  }
  ASSERT_EQ(tp.logits.size(), plain.logits.size());
  int differ = 0;
  for (size_t i = 0; i < plain.logits.size(); ++i) differ += tp.logits[i] != plain.logits[i];
  EXPECT_EQ(differ, 0) << "positions whose logits differ";
  EXPECT_EQ(tp.kept, plain.kept);
  if (policy->enabled) {
    EXPECT_FALSE(plain.kept.empty());
  }
}

// N = 3 (the default model's 3 KV heads, 9 query heads, FFN 1536) on one GPU.
TEST_P(Policies, ThreeRanksAgreeWithTheWholeModel) {
  REQUIRE_GPU();
  auto m = default_model();
  if (m == nullptr) GTEST_SKIP() << "the default model is not cached (scripts/fetch_model.py)";
  auto policy = kv::LagPolicy::parse(GetParam());
  ASSERT_TRUE(policy.ok()) << policy.status();
  const std::vector<int32_t> ids = testing_util::docs_text_ids(*m, 1000);
  ForwardRun plain, tp;
  {
    auto be = plain_backend(*m);
    ASSERT_NE(be, nullptr);
    plain = engine_forward(*be, ids, *policy, 160, 200);
  }
  {
    auto be = tp_backend(*m, 3, /*single_device=*/true, 128);
    ASSERT_NE(be, nullptr);
    EXPECT_EQ(be->config().n_kv_heads, 3);
    tp = engine_forward(*be, ids, *policy, 160, 200);
  }
  ASSERT_EQ(tp.logits.size(), plain.logits.size());
  int agree = 0;
  double worst = 0, sum = 0;
  for (size_t i = 0; i < plain.logits.size(); ++i) {
    agree += argmax(tp.logits[i]) == argmax(plain.logits[i]);
    const double e = testing_util::rel_err(tp.logits[i], plain.logits[i]);
    worst = std::max(worst, e);
    sum += e;
  }
  const double top1 = static_cast<double>(agree) / plain.logits.size();
  const double mean = sum / plain.logits.size();
  std::printf("policy %s: TP 3 vs whole model: top-1 %.4f; relative logits error mean %.2e, worst %.2e over %zu positions\n",
              GetParam(), top1, mean, worst, plain.logits.size());
  // With the policy on, a near-tie of the top-k that the other summation
  // order flips changes that head's cache from there on: the bar of the GPU
  // against the fp32 CPU in cuda_backend_test.cpp (97%), for the same reason.
  EXPECT_GE(top1, policy->enabled ? 0.97 : 0.99);
  if (!policy->enabled) {
    EXPECT_LT(mean, 1e-2);
  }
  // Kept positions, slot by slot (issue 6's measure): a near-tie of the
  // top-k may flip, and the caches then differ from there on.
  ASSERT_EQ(tp.kept.size(), plain.kept.size());
  int64_t same = 0, total = 0, same_sets = 0;
  for (const auto& [key, kept] : plain.kept) {
    const auto it = tp.kept.find(key);
    ASSERT_NE(it, tp.kept.end());
    const std::set<int32_t> mine(it->second.begin(), it->second.end());
    for (int32_t p : kept) same += mine.count(p);
    total += static_cast<int64_t>(kept.size());
    same_sets += it->second == kept;
  }
  if (policy->enabled) {
    ASSERT_GT(total, 0);
    std::printf("kept positions agree on %.4f of %lld slots; %lld of %zu (layer, head, partition) sets equal\n",
                static_cast<double>(same) / total, static_cast<long long>(total),
                static_cast<long long>(same_sets), plain.kept.size());
    EXPECT_GE(static_cast<double>(same) / total, 0.97);
  }
}

INSTANTIATE_TEST_SUITE_P(TensorParallel, Policies,
                         ::testing::Values("off", "sink=16,lag=64,ratio=0.25"));

// N ranks on a Qwen2 model (the QKV bias is split with the heads; 2 KV heads,
// so at N = 4 each is replicated on two ranks), policy on, against the whole
// model; then greedy sampling on the device through rank 0.
void expect_ranks_agree_on_tiny_qwen2(int size, bool single_device) {
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->config.qkv_bias);
  const std::vector<int32_t> ids = testing_util::conformance_ids(300, (*m)->config.vocab_size);
  const auto policy = kv::LagPolicy::parse("sink=4,lag=16,ratio=0.25");
  ASSERT_TRUE(policy.ok());
  auto plain_be = plain_backend(**m, 64);
  auto tp_be = tp_backend(**m, size, single_device, 64);
  ASSERT_NE(plain_be, nullptr);
  ASSERT_NE(tp_be, nullptr);
  const ForwardRun plain = engine_forward(*plain_be, ids, *policy, 32, 40);
  const ForwardRun tp = engine_forward(*tp_be, ids, *policy, 32, 40);
  ASSERT_EQ(tp.logits.size(), plain.logits.size());
  int agree = 0;
  for (size_t i = 0; i < plain.logits.size(); ++i) agree += argmax(tp.logits[i]) == argmax(plain.logits[i]);
  EXPECT_GE(static_cast<double>(agree) / plain.logits.size(), 0.97);
  // Both KV heads' selections come back, under their own head numbers.
  std::set<int> heads;
  for (const auto& [key, kept] : tp.kept) heads.insert(std::get<1>(key));
  EXPECT_EQ(heads, (std::set<int>{0, 1}));
  EXPECT_EQ(tp.kept.size(), plain.kept.size());
  EXPECT_EQ(testing_util::expect_greedy_takes_argmax(*tp_be, 4, 8), 32);
}

TEST(TensorParallel, TwoRanksOnOneGpuAgreeWithTheWholeModel) {
  REQUIRE_GPU();
  expect_ranks_agree_on_tiny_qwen2(2, /*single_device=*/true);
}

TEST(TensorParallel, FourRanksReplicatingKvHeadsAgreeWithTheWholeModel) {
  REQUIRE_GPU();
  expect_ranks_agree_on_tiny_qwen2(4, /*single_device=*/true);
}

// Across GPUs through NCCL (issue 10; skips with fewer than 2 GPUs).
TEST(TensorParallel, TwoGpusThroughNcclAgreeWithTheWholeModel) {
  REQUIRE_GPU();
  int n_devices = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n_devices), cudaSuccess);
  if (n_devices < 2) GTEST_SKIP() << "one GPU";
  if (!backend::cuda::nccl_available()) GTEST_SKIP() << "built without NCCL";
  expect_ranks_agree_on_tiny_qwen2(2, /*single_device=*/false);
}

TEST(TensorParallel, RejectsWhatItCannotSplitOrPlace) {
  REQUIRE_GPU();
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  ASSERT_TRUE(m.ok()) << m.status();
  backend::TensorParallelOptions tp;
  tp.size = 3;  // 4 query heads
  tp.single_device = true;
  auto be = backend::make_tensor_parallel_backend(**m, options(64), tp);
  ASSERT_FALSE(be.ok());
  EXPECT_EQ(be.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(be.status().message().find("4 query heads"), std::string::npos) << be.status();
  tp.size = 2;  // ranks sharing a GPU cannot each size their cache from its free memory
  backend::CudaBackendOptions unsized = options(64);
  unsized.kv_cache_bytes = 0;
  be = backend::make_tensor_parallel_backend(**m, unsized, tp);
  ASSERT_FALSE(be.ok());
  EXPECT_NE(be.status().message().find("kv_cache_bytes"), std::string::npos) << be.status();
  int n_devices = 0;
  ASSERT_EQ(cudaGetDeviceCount(&n_devices), cudaSuccess);
  tp.size = 2;
  tp.single_device = false;
  backend::CudaBackendOptions opt = options(64);
  opt.device = n_devices - 1;  // rank 1 would be past the last device
  be = backend::make_tensor_parallel_backend(**m, opt, tp);
  ASSERT_FALSE(be.ok());
  EXPECT_NE(be.status().message().find("needs devices"), std::string::npos) << be.status();
}

}  // namespace
}  // namespace lagserve
