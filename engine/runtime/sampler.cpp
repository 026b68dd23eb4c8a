// sample_token: greedy argmax or a categorical draw in double precision.
#include "engine/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace lagserve::runtime {

int32_t sample_token(std::span<const float> logits, const SamplingParams& params,
                     std::mt19937_64& rng) {
  const auto argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
  if (params.temperature <= 0.f) return static_cast<int32_t>(argmax);
  const double mx = logits[argmax];
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    sum += (p[i] = std::exp((logits[i] - mx) / params.temperature));
  }
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (size_t i = 0; i < p.size(); ++i) {
    if ((u -= p[i]) < 0) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(argmax);
}

}  // namespace lagserve::runtime
