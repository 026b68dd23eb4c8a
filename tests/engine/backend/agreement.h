// Agreement of two teacher-forced runs of the same steps (engine_forward):
// top-1 per position and the positions kept by compaction, as issue 6 counts
// them (tests/engine/cuda/cuda_backend_test.cpp, the GPU against the CPU;
// tests/engine/backend/cpu_bf16_rounding_test.cpp, bf16 rounding against fp32).
#pragma once

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kv/lag_policy.h"
#include "tests/engine/backend/engine_incremental.h"

namespace lagserve::testing_util {

inline int argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Fractions of positions with the same top-1 and of kept slots alike.
struct Agreement {
  double top1 = 0, slots = 1;
};

// How `run` agrees with the reference run `ref` of the same steps: top-1 per
// position, kept positions per slot, and (printed, for the record in
// docs/cuda.md) where the disagreements are: the first partition whose
// selection differs, the top-1 agreement before the positions it can reach
// and after, and how close the reference's top two logits were where the
// top-1s differ.

inline Agreement agreement(const ForwardRun& run, const ForwardRun& ref, const kv::LagPolicy& policy,
                           const std::string& label) {
  Agreement a;
  EXPECT_EQ(run.logits.size(), ref.logits.size());
  EXPECT_EQ(run.kept.size(), ref.kept.size());
  if (run.logits.size() != ref.logits.size() || run.kept.size() != ref.kept.size()) return {};
  int agree = 0;
  for (size_t i = 0; i < ref.logits.size(); ++i) agree += argmax(run.logits[i]) == argmax(ref.logits[i]);
  a.top1 = static_cast<double>(agree) / ref.logits.size();
  std::printf("%s: top-1 agreement %.4f over %zu positions\n", label.c_str(), a.top1, ref.logits.size());
  if (!policy.enabled) return a;
  EXPECT_GT(ref.kept.size(), 0u);
  int64_t same = 0, total = 0;
  int first_diff = std::numeric_limits<int>::max();
  for (const auto& [key, kept] : ref.kept) {
    auto it = run.kept.find(key);
    if (it == run.kept.end() || it->second.size() != kept.size()) {
      ADD_FAILURE() << label << ": partition kept sets differ in size";
      return {};
    }
    const std::set<int32_t> s(kept.begin(), kept.end());
    for (int32_t p : it->second) same += s.count(p);
    total += static_cast<int64_t>(kept.size());
    if (it->second != kept) first_diff = std::min(first_diff, std::get<2>(key));
  }
  a.slots = static_cast<double>(same) / total;
  std::printf("%s: kept positions agree on %.4f of %lld slots\n", label.c_str(), a.slots,
              static_cast<long long>(total));
  // A partition's selection first hides keys from the queries of the
  // partition after its reference one (DESIGN.md section 1).
  const int64_t reach = first_diff == std::numeric_limits<int>::max()
                            ? static_cast<int64_t>(ref.logits.size())
                            : policy.sink + (static_cast<int64_t>(first_diff) + 2) * policy.lag;
  int before = 0, before_n = 0, after = 0, after_n = 0, near = 0, differ = 0;
  for (size_t i = 0; i < ref.logits.size(); ++i) {
    const bool same_top = argmax(run.logits[i]) == argmax(ref.logits[i]);
    (static_cast<int64_t>(i) < reach ? before : after) += same_top;
    (static_cast<int64_t>(i) < reach ? before_n : after_n) += 1;
    if (same_top) continue;
    std::vector<float> top2(ref.logits[i]);
    std::partial_sort(top2.begin(), top2.begin() + 2, top2.end(), std::greater<float>());
    near += top2[0] - top2[1] < 0.5f;
    ++differ;
  }
  std::printf("%s: first differing selection in partition %d (reaches position %lld); top-1 "
              "agreement %d/%d before it, %d/%d after; %d of %d top-1 differences at a reference top-2 "
              "gap < 0.5\n",
              label.c_str(), first_diff, static_cast<long long>(reach), before, before_n, after,
              after_n, near, differ);
  return a;
}

}  // namespace lagserve::testing_util
