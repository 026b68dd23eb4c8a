// Gradients of the whole LRSA model against central finite differences, in
// double, on a tiny random model (tests/golden/models/tiny-qwen2): one layer
// compressed, one in skip_layers. Each perturbation must leave the selection
// as it was (a step function has no derivative), which the trace checks.
#include <random>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "tests/engine/backend/engine_incremental.h"
#include "trainer/causal_lm.h"

namespace lagserve::trainer {
namespace {

TEST(LrsaGradients, TinyModelMatchesFiniteDifferences) {
  auto m = model::load_model(testing_util::conformance_model_path("tiny-qwen2"));
  ASSERT_TRUE(m.ok()) << m.status();
  CausalLmOptions opt;
  opt.policy = *kv::LagPolicy::parse("sink=2,lag=6,keep=2,score_v_weight=0.5,skip_layers=1");
  opt.compute_dtype = torch::kDouble;
  CausalLm lm((*m)->config, (*m)->weights, opt);
  lm.to(torch::kDouble);
  torch::manual_seed(11);
  const auto tokens = torch::randint(3, (*m)->config.vocab_size, {1, 47}, torch::kLong);
  const auto target = torch::ones_like(tokens, torch::kUInt8);
  const auto loss_of = [&](LrsaTrace* trace) {
    return lm_loss(lm.forward(tokens, trace), tokens, target).first;
  };
  LrsaTrace base;
  loss_of(&base).backward();
  ASSERT_FALSE(base.kept.empty());

  const double eps = 1e-6;
  std::mt19937 rng(5);
  int checked = 0, nonzero = 0;
  for (const auto& named : lm.named_parameters()) {
    torch::Tensor p = named.value();
    const auto grad = p.grad().clone();
    for (int n = 0; n < 6; ++n) {
      // Embedding rows of absent tokens have no gradient: pick present ones.
      const int64_t i = named.key() == "tok_embd"
                            ? tokens[0][rng() % 47].item<int64_t>() * p.size(1) + rng() % p.size(1)
                            : static_cast<int64_t>(rng() % p.numel());
      torch::NoGradGuard no_grad;
      const double v = p.view(-1)[i].item<double>();
      LrsaTrace plus_trace, minus_trace;
      p.view(-1)[i] = v + eps;
      const double plus = loss_of(&plus_trace).item<double>();
      p.view(-1)[i] = v - eps;
      const double minus = loss_of(&minus_trace).item<double>();
      p.view(-1)[i] = v;
      ASSERT_EQ(plus_trace.kept, base.kept) << named.key() << "[" << i << "] moved the selection";
      ASSERT_EQ(minus_trace.kept, base.kept) << named.key() << "[" << i << "] moved the selection";
      const double numeric = (plus - minus) / (2 * eps);
      const double analytic = grad.view(-1)[i].item<double>();
      EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::abs(numeric))) << named.key() << "[" << i << "]";
      ++checked;
      nonzero += std::abs(numeric) > 1e-8;
    }
  }
  EXPECT_GE(checked, 60);
  EXPECT_GE(nonzero, checked / 2) << "most checked entries should matter";
}

}  // namespace
}  // namespace lagserve::trainer
