// CpuBackendOptions::bf16_rounding, the reference of the CUDA whole-model
// tests: it must change the logits by bf16's rounding and no more, keep the
// LagKV selection mostly as fp32 makes it, and be deterministic.
#include <algorithm>
#include <cstdio>

#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
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
      ASSERT_EQ(bf16.kept.size(), fp32.kept.size());
      int64_t same = 0, total = 0;
      for (const auto& [key, kept] : fp32.kept) {
        const auto& other = bf16.kept.at(key);
        for (int32_t p : other) same += std::count(kept.begin(), kept.end(), p);
        total += static_cast<int64_t>(kept.size());
      }
      EXPECT_GT(total, 0);
      EXPECT_GE(static_cast<double>(same) / total, 0.9) << spec;
    }
  }
}

}  // namespace
}  // namespace lagserve
