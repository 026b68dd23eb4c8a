// gemm_rows_bf16: y[r, n] (+)= sum_k a[r, k] * w[n, k] for up to 32 rows
// (a decode step's batch) on mma.m16n8k16, bf16 in, fp32 out: the skinny
// GEMM that a batch of one-token rows needs between the skinny GEMMs of
// kernels/cuda/gemv.h (up to 8 rows) and cuBLAS (prefill chunks).
//
// Why not cuBLAS at 32 rows: its tiles leave SMs idle on these shapes (the
// FFN's gate_up is 94 tiles of 192 features on 132 SMs) and it cannot
// overlap its launch with the kernel before it. Here every SM streams an
// equal share of the weights, and the kernel is launched with programmatic
// dependent launch (kernels/cuda/pdl.h): its first weight loads go out
// before the kernel before it has finished.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace lagserve::kernels::cuda {

// Whether gemm_rows_bf16 takes this shape on the current device: N a
// multiple of 16 (at most 2^24), K a multiple of 64 and at most 2,048 (the
// rows are staged whole in shared memory: up to 162 KiB, which the device
// must allow a block).
bool gemm_rows_supports(int64_t N, int64_t K);

// a: [M, lda] bf16 (lda a multiple of 8, 16-byte aligned); w: [N, K] bf16;
// y: [M, ldy] fp32, overwritten or (add) added to. Rows are independent:
// a row's outputs have the same bits whatever the other rows and M (the
// split of the work depends on N, K and sm_count only). M > 32 runs in
// launches of 32 rows.
void gemm_rows_bf16(const bf16* a, int64_t lda, const bf16* w, float* y, int64_t ldy, int64_t M,
                    int64_t N, int64_t K, bool add, int32_t sm_count, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
