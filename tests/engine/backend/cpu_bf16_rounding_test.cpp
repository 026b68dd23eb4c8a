// CpuBackendOptions::bf16_rounding, the reference of the CUDA whole-model
// tests: it must change the logits by bf16's rounding and no more, keep the
// LagKV selection mostly as fp32 makes it, and be deterministic. And how far
// bf16 alone takes the default model from fp32, counted as issue 6 counts
// the GPU against the CPU.
#include <algorithm>
#include <cstdio>

#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "tests/engine/backend/agreement.h"
#include "tests/engine/backend/engine_incremental.h"

namespace lagserve {
namespace {

using testing_util::engine_forward;
using testing_util::ForwardRun;

TEST(CpuBf16Rounding, ChangesLogitsByBf16RoundingAlone) {
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  ASSERT_TRUE(m.ok()) << m.status();
  const std::vector<int32_t> ids = testing_util::conformance_ids(96, (*m)->config.vocab_size);
  for (const char* spec : {"off", "sink=4,lag=8,ratio=0.5"}) {
    auto policy = kv::LagPolicy::parse(spec);
    ASSERT_TRUE(policy.ok());
    const ForwardRun fp32 = engine_forward(**m, ids, *policy, 24, 4, 16);
    const ForwardRun bf16 = engine_forward(**m, ids, *policy, 24, 4, 16, /*bf16_rounding=*/true);
    const ForwardRun again = engine_forward(**m, ids, *policy, 24, 4, 16, /*bf16_rounding=*/true);
    ASSERT_EQ(bf16.logits.size(), fp32.logits.size());
    double worst = 0, least = 1;
    for (size_t i = 0; i < fp32.logits.size(); ++i) {
      const double e = testing_util::rel_err(bf16.logits[i], fp32.logits[i]);
      worst = std::max(worst, e);
      least = std::min(least, e);
      ASSERT_EQ(bf16.logits[i], again.logits[i]) << spec << " position " << i << ": not deterministic";
    }
    // bf16's relative step is 2^-8 per rounding, and a position's logits
    // pass through about a hundred roundings in this model: every position
    // moves by more than fp32's noise, and by percents at most.
    std::printf("%s: relative logit change %.2g to %.2g\n", spec, least, worst);
    EXPECT_GT(least, 1e-5) << spec;
    EXPECT_LT(worst, 0.1) << spec;
    if (policy->enabled) {
      EXPECT_GE(testing_util::agreement(bf16, fp32, *policy, spec).slots, 0.9) << spec;
    }
  }
}

// The default model over the 2,000 positions of the CUDA whole-model test
// (tests/engine/cuda/cuda_backend_test.cpp: prompt chunks of 160, the last 300
// positions one a step), rounding to bf16 where the GPU keeps bf16 against
// plain fp32, both on the CPU: what bf16 alone costs in top-1 and kept-slot
// agreement, the floor under the GPU's figures against fp32 (docs/cuda.md).
// Held to the bars of the GPU against fp32: 99% top-1 with the policy off;
// 97% top-1 and kept slots with it on, each run making its own selections.
// With the fp32 run following the bf16 run's selections (as the GPU's
// reference follows the GPU's), a near-tie of the top-K flips one selection,
// not the rest of the run: 99% of kept slots, and top-1 near the policy-off
// figure (on 2026-12-08, native and portable builds: 99.15% and 98.95%
// following, 98.20% and 98.10% not, 99.20% and 99.00% policy off; bf16
// against fp32 costs about a point of top-1 with or without a policy).
class Bf16AgainstFp32 : public ::testing::TestWithParam<const char*> {};

TEST_P(Bf16AgainstFp32, DefaultModelAgreesAsTheGpuIsAskedTo) {
  const std::string path = testing_util::conformance_model_path("default");
  if (path.empty()) GTEST_SKIP() << "the default model is not cached (scripts/fetch_model.py)";
  auto m = model::load_model(path);
  ASSERT_TRUE(m.ok()) << m.status();
  auto policy = kv::LagPolicy::parse(GetParam());
  ASSERT_TRUE(policy.ok()) << policy.status();
  const std::vector<int32_t> ids = testing_util::docs_text_ids(**m, 2000);
  ASSERT_EQ(ids.size(), 2000u);
  const ForwardRun bf16 = engine_forward(**m, ids, *policy, 160, 16, 300, /*bf16_rounding=*/true);
  const ForwardRun fp32 = engine_forward(**m, ids, *policy, 160, 16, 300);
  const testing_util::Agreement a = testing_util::agreement(
      bf16, fp32, *policy, std::string("policy ") + GetParam() + ", chunks of 160, CPU bf16 vs CPU fp32");
  EXPECT_GE(a.top1, policy->enabled ? 0.97 : 0.99);
  EXPECT_GE(a.slots, 0.97);
  if (!policy->enabled) return;
  const ForwardRun following = engine_forward(**m, ids, *policy, 160, 16, 300, false, &bf16.kept);
  const testing_util::Agreement f = testing_util::agreement(
      bf16, following, *policy,
      std::string("policy ") + GetParam() + ", chunks of 160, CPU bf16 vs CPU fp32 following its selections");
  EXPECT_GE(f.top1, 0.985);
  EXPECT_GE(f.slots, 0.99);
}

INSTANTIATE_TEST_SUITE_P(Policies, Bf16AgainstFp32,
                         ::testing::Values("off", "sink=16,lag=64,ratio=0.25"));

}  // namespace
}  // namespace lagserve
