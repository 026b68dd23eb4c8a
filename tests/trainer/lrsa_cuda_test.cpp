// The trainer on CUDA against the CPU (skips without a GPU): in fp32 the
// LRSA forward and its gradients agree with the CPU run, whose conformance
// with the engine tests/trainer/lrsa_conformance_test.cpp proves; in bf16
// (the training dtype) the logits stay close.
#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "trainer/causal_lm.h"

namespace lagserve::trainer {
namespace {

namespace fs = std::filesystem;

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  const auto bf = b.to(torch::kCPU, torch::kDouble);
  return ((a.to(torch::kCPU, torch::kDouble) - bf).norm() / bf.norm()).item<double>();
}

struct TrainRun {
  torch::Tensor logits;
  std::vector<torch::Tensor> grads;
};

TrainRun run(const model::Model& m, const torch::Tensor& tokens, const kv::LagPolicy& P,
        torch::Device device, torch::Dtype dtype) {
  CausalLmOptions opt;
  opt.policy = P;
  opt.compute_dtype = dtype;
  CausalLm lm(m.config, m.weights, opt);
  lm.to(device);
  const auto t = tokens.to(device);
  TrainRun r;
  r.logits = lm.forward(t);
  lm_loss(r.logits, t, torch::ones_like(t, torch::kUInt8)).first.backward();
  for (const auto& p : lm.parameters()) r.grads.push_back(p.grad().cpu());
  r.logits = r.logits.detach().cpu();
  return r;
}

TEST(LrsaCuda, MatchesTheCpuInFp32AndStaysCloseInBf16) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"tiny-llama", "tiny-qwen2"}) {
    SCOPED_TRACE(name);
    auto m = model::load_model((fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models" / name).string());
    ASSERT_TRUE(m.ok()) << m.status();
    const auto P = *kv::LagPolicy::parse("sink=3,lag=8,keep=2,skip_layers=1");
    torch::manual_seed(1);
    const auto tokens = torch::randint(3, (*m)->config.vocab_size, {2, 93}, torch::kLong);
    const TrainRun cpu = run(**m, tokens, P, torch::kCPU, torch::kFloat);
    const TrainRun gpu = run(**m, tokens, P, torch::kCUDA, torch::kFloat);
    EXPECT_LT(rel_err(gpu.logits, cpu.logits), 1e-4);
    ASSERT_EQ(gpu.grads.size(), cpu.grads.size());
    for (size_t i = 0; i < cpu.grads.size(); ++i) EXPECT_LT(rel_err(gpu.grads[i], cpu.grads[i]), 1e-3) << i;
    const TrainRun bf16 = run(**m, tokens, P, torch::kCUDA, torch::kBFloat16);
    EXPECT_LT(rel_err(bf16.logits, cpu.logits), 5e-2);
  }
}

}  // namespace
}  // namespace lagserve::trainer

namespace lagserve::trainer {
namespace {

// In bf16 on CUDA the LRSA op runs the varlen flash kernel (no mask): its
// output and gradients against the masked reference path in double, on the
// same (bf16-rounded) inputs.
TEST(LrsaCuda, FlashPathMatchesTheMaskedReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const char* spec : {"sink=16,lag=32,keep=8", "sink=0,lag=24,keep=6", "sink=5,lag=16,keep=16"}) {
    SCOPED_TRACE(spec);
    const auto P = *kv::LagPolicy::parse(spec);
    torch::manual_seed(7);
    const int64_t T = 611;  // not a multiple of any lag above
    const auto bf = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
    auto q = torch::randn({2, 9, T, 64}, bf), k = torch::randn({2, 3, T, 64}, bf),
         v = torch::randn({2, 3, T, 64}, bf), w = torch::randn({2, 9, T, 64}, bf);
    std::vector<torch::Tensor> fast{q.clone().requires_grad_(true), k.clone().requires_grad_(true),
                                    v.clone().requires_grad_(true)};
    std::vector<torch::Tensor> ref;
    for (const auto& t : {q, k, v}) ref.push_back(t.to(torch::kCPU, torch::kDouble).requires_grad_(true));
    const auto out = lrsa_attention(fast[0], fast[1], fast[2], P, 0, nullptr);
    const auto want = lrsa_attention(ref[0], ref[1], ref[2], P, 0, nullptr);
    EXPECT_LT(rel_err(out, want), 1e-2);
    (out.to(torch::kFloat) * w.to(torch::kFloat)).sum().backward();
    (want * w.to(torch::kCPU, torch::kDouble)).sum().backward();
    for (int i = 0; i < 3; ++i) EXPECT_LT(rel_err(fast[i].grad(), ref[i].grad()), 2e-2) << "input " << i;
  }
}

}  // namespace
}  // namespace lagserve::trainer
