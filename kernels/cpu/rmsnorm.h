// RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, row by row.
#pragma once

#include <cstdint>

namespace lagserve::kernels {

// x, y: [n_rows, dim] (may alias); weight: [dim].
void rmsnorm(const float* x, const float* weight, float* y, int64_t n_rows, int64_t dim,
             float eps);

}  // namespace lagserve::kernels
