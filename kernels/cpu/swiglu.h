// SwiGLU: out = silu(gate) * up, with gate and up side by side in each row.
#pragma once

#include <cstdint>

namespace lagserve::kernels {

// gate_up: [n_rows, 2 * d_ff] (gate columns then up columns); out: [n_rows, d_ff].
void swiglu(const float* gate_up, float* out, int64_t n_rows, int64_t d_ff);

}  // namespace lagserve::kernels
