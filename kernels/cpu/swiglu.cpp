// swiglu: silu(g) = g / (1 + exp(-g)).
#include "kernels/cpu/swiglu.h"

#include <cmath>

namespace lagserve::kernels {

void swiglu(const float* gate_up, float* out, int64_t n_rows, int64_t d_ff) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* g = gate_up + r * 2 * d_ff;
    const float* u = g + d_ff;
    float* o = out + r * d_ff;
    for (int64_t i = 0; i < d_ff; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

}  // namespace lagserve::kernels
