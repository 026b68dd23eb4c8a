// Row-major GEMMs through cuBLAS: bf16 inputs, fp32 accumulation and output.
#pragma once

#include <cstdint>

#include <cublas_v2.h>

#include "kernels/cuda/bf16.h"

namespace lagserve::kernels::cuda {

// y[M, N] (+)= x[M, K] * w[N, K]^T, the layout of a linear layer: x rows are
// tokens, w rows are output features. y is fp32; accumulate adds to it.
void gemm_bf16_nt(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t M,
                  int64_t N, int64_t K, bool accumulate);

}  // namespace lagserve::kernels::cuda
