#include "kernels/cuda/swiglu.h"

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + __expf(-g)) * u; }

__global__ void swiglu_kernel(const float* gate_up, bf16* out, int64_t n, int64_t d_ff) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n) return;
  const int64_t r = e / d_ff, i = e % d_ff;
  out[e] = __float2bfloat16(silu_mul(gate_up[r * 2 * d_ff + i], gate_up[r * 2 * d_ff + d_ff + i]));
}

// d_ff a multiple of 4: four outputs per thread, from one float4 of gate and
// one of up.
__global__ void swiglu4_kernel(const float* gate_up, bf16* out, int64_t n4, int64_t ff4) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n4) return;
  const int64_t r = e / ff4, i = e % ff4;
  const float4* row = reinterpret_cast<const float4*>(gate_up) + r * 2 * ff4;
  const float4 g = __ldg(row + i), u = __ldg(row + ff4 + i);
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(out) + 2 * e;
  o[0] = __floats2bfloat162_rn(silu_mul(g.x, u.x), silu_mul(g.y, u.y));
  o[1] = __floats2bfloat162_rn(silu_mul(g.z, u.z), silu_mul(g.w, u.w));
}

}  // namespace

void swiglu(const float* gate_up, bf16* out, int64_t n_rows, int64_t d_ff, cudaStream_t stream) {
  const int64_t n = n_rows * d_ff;
  if (n == 0) return;
  if (d_ff % 4 == 0 && reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 8 == 0) {
    swiglu4_kernel<<<blocks_for(n / 4, kThreads), kThreads, 0, stream>>>(gate_up, out, n / 4, d_ff / 4);
  } else {
    swiglu_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(gate_up, out, n, d_ff);
  }
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
