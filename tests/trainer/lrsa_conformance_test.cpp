// The conformance test at the heart of the product (DESIGN.md section 1, "One
// definition, two consumers"): for the same checkpoint and tokens, CPU fp32,
// the trainer's LRSA forward (LibTorch, block-sparse masked attention) and the
// engine's incremental compressed run (CPU backend: prefill in chunks, then
// decode, compacting its paged cache) give the same logits at every position
// (relative error < 1e-4) and keep the same positions.
#include <cstdio>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "tests/engine/backend/engine_incremental.h"
#include "trainer/causal_lm.h"

namespace lagserve {
namespace {

using testing_util::engine_forward;
using testing_util::ForwardRun;
using testing_util::rel_err;

ForwardRun trainer_forward(const model::Model& m, const std::vector<int32_t>& ids,
                           const kv::LagPolicy& policy, trainer::AttentionMode mode) {
  trainer::CausalLmOptions opt;
  opt.attention = mode;
  opt.policy = policy;
  trainer::CausalLm lm(m.config, m.weights, opt);
  lm.eval();
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids64(ids.begin(), ids.end());
  const auto tokens = torch::tensor(ids64, torch::kLong).view({1, -1});
  trainer::LrsaTrace trace;
  const auto logits = lm.forward(tokens, &trace).contiguous();
  ForwardRun run;
  const int64_t V = logits.size(2);
  const float* p = logits.data_ptr<float>();
  for (size_t t = 0; t < ids.size(); ++t) run.logits.emplace_back(p + t * V, p + (t + 1) * V);
  for (const auto& [key, kept] : trace.kept) {
    run.kept[{std::get<0>(key), std::get<1>(key), std::get<2>(key)}] = kept;
  }
  return run;
}

struct Case {
  std::string model;  // under tests/golden/models, or "default"
  std::string policy;
  int length;  // never a multiple of lag past the sink
  int chunk;   // prefill chunk of the engine run
  int decode_tail;
  int block_size;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.model << " " << c.policy << " T=" << c.length; }

class LrsaConformance : public ::testing::TestWithParam<Case> {};

TEST_P(LrsaConformance, TrainerForwardEqualsEngineIncrementalRun) {
  const Case& c = GetParam();
  const std::string path = testing_util::conformance_model_path(c.model);
  if (path.empty()) GTEST_SKIP() << "no default model";
  auto m = model::load_model(path);
  ASSERT_TRUE(m.ok()) << m.status();
  auto P = kv::LagPolicy::parse(c.policy);
  ASSERT_TRUE(P.ok()) << P.status();
  ASSERT_NE((c.length - P->sink) % P->lag, 0) << "pick a length that is not a multiple of L";
  torch::set_num_threads(2);
  const std::vector<int32_t> ids = testing_util::conformance_ids(c.length, (*m)->config.vocab_size);

  const ForwardRun trained = trainer_forward(**m, ids, *P, trainer::AttentionMode::Lrsa);
  const ForwardRun served = engine_forward(**m, ids, *P, c.chunk, c.block_size, c.decode_tail);
  ASSERT_FALSE(served.kept.empty()) << "the sequence must be long enough to compress";
  ASSERT_EQ(trained.logits.size(), served.logits.size());
  double worst = 0;
  for (size_t t = 0; t < served.logits.size(); ++t) {
    const double e = rel_err(trained.logits[t], served.logits[t]);
    worst = std::max(worst, e);
    EXPECT_LT(e, 1e-4) << "position " << t;
  }
  EXPECT_EQ(trained.kept, served.kept);

  // The policy must change the logits, or this test would prove nothing.
  const ForwardRun full = trainer_forward(**m, ids, *P, trainer::AttentionMode::Full);
  double policy_effect = 0;
  for (size_t t = 0; t < full.logits.size(); ++t) {
    policy_effect = std::max(policy_effect, rel_err(full.logits[t], served.logits[t]));
  }
  EXPECT_GT(policy_effect, 1e-3);
  std::printf("[ %s %s T=%d ] worst relative error %.3g over %zu positions, %zu compactions; "
              "full attention differs by up to %.3g\n",
              c.model.c_str(), c.policy.c_str(), c.length, worst, served.logits.size(),
              served.kept.size(), policy_effect);
}

INSTANTIATE_TEST_SUITE_P(
    Policies, LrsaConformance,
    ::testing::Values(
        Case{"tiny-llama", "sink=4,lag=8,keep=2", 77, 12, 9, 4},
        Case{"tiny-llama", "sink=0,lag=6,ratio=0.5", 61, 7, 20, 16},
        Case{"tiny-qwen2", "sink=2,lag=7,keep=3,score_v_weight=0.5,skip_layers=1", 70, 16, 11, 3},
        Case{"tiny-qwen2", "sink=5,lag=4,keep=1", 64, 64, 5, 8},
        Case{"default", "sink=16,lag=32,ratio=0.25", 300, 48, 30, 16},
        Case{"default", "sink=8,lag=16,keep=4,score_v_weight=2,skip_layers=0;3", 203, 40, 17, 16}));

}  // namespace
}  // namespace lagserve
