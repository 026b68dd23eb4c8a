// rope_neox: angles computed in double, as position * inv_freq grows large.
#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

namespace lagserve::kernels {

void rope_neox(float* x, int64_t n_rows, int64_t row_stride, int32_t n_heads, int32_t head_dim,
               const int32_t* positions, const float* inv_freq) {
  const int32_t half = head_dim / 2;
  std::vector<float> cos_t(half), sin_t(half);
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int32_t i = 0; i < half; ++i) {
      // NOTE: float32 product like transformers (inv_freq * position in fp32),
      // then cos/sin; matching its rounding keeps logits within 1e-4.
      const float angle = static_cast<float>(positions[r]) * inv_freq[i];
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    float* row = x + r * row_stride;
    for (int32_t h = 0; h < n_heads; ++h) {
      float* v = row + static_cast<int64_t>(h) * head_dim;
      for (int32_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = b * cos_t[i] + a * sin_t[i];
      }
    }
  }
}

}  // namespace lagserve::kernels
