// Token sampling from one row of logits.
#pragma once

#include <cstdint>
#include <random>
#include <span>

namespace lagserve::runtime {

struct SamplingParams {
  float temperature = 0.f;  // 0: greedy
  uint64_t seed = 0;
};

// Greedy (ties go to the lower id) when temperature is 0, else a draw from
// softmax(logits / temperature).
int32_t sample_token(std::span<const float> logits, const SamplingParams& params,
                     std::mt19937_64& rng);

}  // namespace lagserve::runtime
