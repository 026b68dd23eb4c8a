// SwiGLU on the GPU.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace lagserve::kernels::cuda {

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, d_ff + i]; gate_up fp32
// [n_rows, 2 * d_ff], out bf16 [n_rows, d_ff].
void swiglu(const float* gate_up, bf16* out, int64_t n_rows, int64_t d_ff, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
