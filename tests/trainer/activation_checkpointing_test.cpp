// Activation checkpointing recomputes each layer in the backward pass: the
// loss and every parameter gradient must equal those of a plain run, with
// LRSA layers (whose selection is recomputed too) and a skip layer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "tests/engine/backend/engine_incremental.h"
#include "trainer/causal_lm.h"

namespace lagserve::trainer {
namespace {

TEST(ActivationCheckpointing, SameLossAndGradients) {
  auto m = model::load_model(testing_util::conformance_model_path("tiny-qwen2"));
  ASSERT_TRUE(m.ok()) << m.status();
  const auto P = *kv::LagPolicy::parse("sink=2,lag=8,keep=3,skip_layers=1");
  torch::manual_seed(3);
  const auto tokens = torch::randint(3, (*m)->config.vocab_size, {2, 75}, torch::kLong);
  const auto target = torch::ones_like(tokens, torch::kUInt8);
  std::vector<std::vector<torch::Tensor>> grads(2);
  double losses[2];
  for (int ckpt = 0; ckpt < 2; ++ckpt) {
    CausalLmOptions opt;
    opt.policy = P;
    opt.checkpoint_activations = ckpt == 1;
    CausalLm lm((*m)->config, (*m)->weights, opt);
    lm.train();
    const auto loss = lm_loss(lm.forward(tokens), tokens, target).first;
    loss.backward();
    losses[ckpt] = loss.item<double>();
    for (const auto& p : lm.parameters()) {
      ASSERT_TRUE(p.grad().defined());
      grads[ckpt].push_back(p.grad().clone());
    }
  }
  EXPECT_DOUBLE_EQ(losses[0], losses[1]);
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) {
    const double scale = grads[0][i].abs().max().item<double>();
    EXPECT_LE((grads[1][i] - grads[0][i]).abs().max().item<double>(), 1e-5 * std::max(scale, 1e-12))
        << "parameter " << i;
    EXPECT_GT(scale, 0.0) << "parameter " << i << " got no gradient";
  }
}

}  // namespace
}  // namespace lagserve::trainer
