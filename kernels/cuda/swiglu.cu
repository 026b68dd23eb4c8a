#include "kernels/cuda/swiglu.h"

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void swiglu_kernel(const float* gate_up, bf16* out, int64_t n, int64_t d_ff) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= n) return;
  const int64_t r = e / d_ff, i = e % d_ff;
  const float g = gate_up[r * 2 * d_ff + i], u = gate_up[r * 2 * d_ff + d_ff + i];
  out[e] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
}

}  // namespace

void swiglu(const float* gate_up, bf16* out, int64_t n_rows, int64_t d_ff, cudaStream_t stream) {
  const int64_t n = n_rows * d_ff;
  if (n == 0) return;
  swiglu_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(gate_up, out, n, d_ff);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
