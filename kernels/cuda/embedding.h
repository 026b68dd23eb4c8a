// Token embedding lookup on the GPU.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace lagserve::kernels::cuda {

// x[r, :] = table[tokens[r], :] (bf16 rows widened to fp32). x: [n_rows, dim].
void embedding(const bf16* table, const int32_t* tokens, float* x, int64_t n_rows, int64_t dim,
               cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
