// RMSNorm on the GPU, with an optional row gather (the logits rows).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace lagserve::kernels::cuda {

// y[r, :] = x[src_row, :] / rms(x[src_row, :]) * weight, with src_row = rows[r]
// (or r when rows is null). x fp32 [*, dim], y bf16 [n_rows, dim].
void rmsnorm(const float* x, const int32_t* rows, const float* weight, bf16* y, int64_t n_rows,
             int64_t dim, float eps, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
