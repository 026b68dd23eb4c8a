#include "kernels/cuda/rmsnorm.h"

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Sum over the block of one value per thread (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x / 32;
  v = lane < n_warps ? partial[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // partial may be reused by the caller's next block_sum
  return v;
}

__global__ void rmsnorm_kernel(const float* x, const int32_t* rows, const float* weight, bf16* y,
                               int64_t dim, float eps) {
  const int64_t r = blockIdx.x;
  const float* xr = x + (rows != nullptr ? rows[r] : r) * dim;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  bf16* yr = y + r * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    yr[i] = __float2bfloat16(xr[i] * inv * weight[i]);
  }
}

}  // namespace

void rmsnorm(const float* x, const int32_t* rows, const float* weight, bf16* y, int64_t n_rows,
             int64_t dim, float eps, cudaStream_t stream) {
  if (n_rows == 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(x, rows, weight, y, dim, eps);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
