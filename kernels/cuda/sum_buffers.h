// The sum of up to kMaxSumBuffers fp32 buffers, added in order (so every
// caller that passes the same buffers gets the same bits): the reduction of
// the single-GPU stand-in for NCCL's all-reduce (engine/backend/cuda/tp_comm.h).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace lagserve::kernels::cuda {

constexpr int kMaxSumBuffers = 8;

// dst[i] = srcs[0][i] + srcs[1][i] + ... + srcs[n_srcs - 1][i], i < n.
// dst may not alias any source. Precondition: 1 <= n_srcs <= kMaxSumBuffers.
void sum_buffers(const float* const* srcs, int n_srcs, float* dst, int64_t n, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
