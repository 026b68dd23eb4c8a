// rmsnorm: sum of squares in double so long rows lose nothing to rounding.
#include "kernels/cpu/rmsnorm.h"

#include <cmath>

namespace lagserve::kernels {

void rmsnorm(const float* x, const float* weight, float* y, int64_t n_rows, int64_t dim,
             float eps) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * weight[i];
  }
}

}  // namespace lagserve::kernels
