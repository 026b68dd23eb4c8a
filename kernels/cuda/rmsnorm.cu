#include "kernels/cuda/rmsnorm.h"

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPer = 8;  // float4s a thread holds: rows up to 8 x 4 x 256 = 8192 wide

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

// Rows whose width is a multiple of 4: thread t holds float4s t, t + blockDim,
// ... of its row and of the weight in registers, all loaded at once, so that
// a row costs one round trip to memory (a decode step's few rows are latency,
// not bandwidth).
template <int kPer>
__global__ void rmsnorm_vec_kernel(const float* x, const int32_t* rows, const float* weight, bf16* y,
                                   int32_t n4, float eps) {
  const int64_t r = blockIdx.x;
  const float4* xr = reinterpret_cast<const float4*>(x + (rows != nullptr ? rows[r] : r) * 4LL * n4);
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  float4 v[kPer], w[kPer];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < n4) {
      v[j] = __ldg(xr + i);
      w[j] = __ldg(w4 + i);
      ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
  }
  ss = block_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(4 * n4) + eps);
  __nv_bfloat162* yr = reinterpret_cast<__nv_bfloat162*>(y + r * 4LL * n4);
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < n4) {
      yr[2 * i] = __floats2bfloat162_rn(v[j].x * inv * w[j].x, v[j].y * inv * w[j].y);
      yr[2 * i + 1] = __floats2bfloat162_rn(v[j].z * inv * w[j].z, v[j].w * inv * w[j].w);
    }
  }
}

// Any width: two passes over the row.
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

template <int kPer>
void launch_vec(const float* x, const int32_t* rows, const float* weight, bf16* y, int64_t n_rows,
                int32_t n4, int threads, float eps, cudaStream_t stream) {
  rmsnorm_vec_kernel<kPer><<<static_cast<unsigned>(n_rows), threads, 0, stream>>>(x, rows, weight, y, n4, eps);
}

}  // namespace

void rmsnorm(const float* x, const int32_t* rows, const float* weight, bf16* y, int64_t n_rows,
             int64_t dim, float eps, cudaStream_t stream) {
  if (n_rows == 0) return;
  const auto aligned = [](const void* p, uintptr_t to) { return reinterpret_cast<uintptr_t>(p) % to == 0; };
  const int64_t n4 = dim / 4;
  if (dim % 4 == 0 && n4 <= static_cast<int64_t>(kMaxPer) * kThreads && aligned(x, 16) && aligned(weight, 16) &&
      aligned(y, 4)) {
    // As many threads as float4s, up to kThreads, in whole warps.
    const int threads = static_cast<int>(std::min<int64_t>(kThreads, (n4 + 31) / 32 * 32));
    const int per = static_cast<int>((n4 + threads - 1) / threads);
    const auto n4i = static_cast<int32_t>(n4);
    if (per == 1) {
      launch_vec<1>(x, rows, weight, y, n_rows, n4i, threads, eps, stream);
    } else if (per == 2) {
      launch_vec<2>(x, rows, weight, y, n_rows, n4i, threads, eps, stream);
    } else if (per <= 4) {
      launch_vec<4>(x, rows, weight, y, n_rows, n4i, threads, eps, stream);
    } else {
      launch_vec<8>(x, rows, weight, y, n_rows, n4i, threads, eps, stream);
    }
  } else {
    rmsnorm_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(x, rows, weight, y, dim, eps);
  }
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
