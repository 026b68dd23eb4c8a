// A GEMM for up to 32 rows whose weights fit the GPU's shared memory spread
// over its blocks (the attention's qkv and output projections): each block
// stages its 16 output features' whole weight rows in shared memory before it
// waits for the kernel before it (programmatic dependent launch,
// kernels/cuda/pdl.h), so the weights stream in while that kernel runs, and
// only the rows (from L2) and 16-feature tiles of mma remain after it.
//
// y[M, N] (+)= x[M, K] * w[N, K]^T, bf16 in, fp32 accumulate and out, the
// layout of gemm_bf16_nt. A row's bits never depend on M or on the rows
// beside it (each output is summed in an order fixed by K).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace lagserve::kernels::cuda {

constexpr int64_t kGemmSmallMaxRows = 32;

// Whether the kernel takes this shape on the current device: N and K
// multiples of 16, and 48 rows of K (16 weight rows and 32 input rows) in a
// block's shared memory (K up to about 2,300 on sm_90, 1,700 on sm_80).
bool gemm_small_supports(int64_t N, int64_t K);

// M in [0, 32]; x rows contiguous [M, K], y [M, N] contiguous. Checks the shape.
void gemm_small_bf16(const bf16* x, const bf16* w, float* y, int64_t M, int64_t N, int64_t K,
                     bool accumulate, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
