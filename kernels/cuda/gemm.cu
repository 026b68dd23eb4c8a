// gemm_bf16_nt: cuBLAS, except for a few rows (decode of a small batch),
// where the product is a matrix-vector one bound by reading w: a warp per
// output feature streams its row of w once with 16-byte loads, several in
// flight, and keeps the M dot products in fp32. bench_gemm_skinny measures
// it against cuBLAS on the same shapes.
#include "kernels/cuda/gemm.h"

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kSkinnyMaxRows = 8;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kUnroll = 8;  // 16-byte loads of w in flight per lane

__device__ __forceinline__ float dot8(const uint4& a, const uint4& b, float acc) {
  const __nv_bfloat162* x = reinterpret_cast<const __nv_bfloat162*>(&a);
  const __nv_bfloat162* y = reinterpret_cast<const __nv_bfloat162*>(&b);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(x[i]), q = __bfloat1622float2(y[i]);
    acc = fmaf(p.x, q.x, acc);
    acc = fmaf(p.y, q.y, acc);
  }
  return acc;
}

// y[m, n] (+)= x[m, :] . w[n, :] for m < M; one warp per n.
template <int M>
__global__ void __launch_bounds__(kThreads)
gemm_skinny_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, float* __restrict__ y,
                   int64_t N, int64_t K, bool accumulate) {
  const int lane = threadIdx.x % 32;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (n >= N) return;  // warp-uniform; no barrier follows
  const int64_t chunks = K / 8;
  const uint4* wr = reinterpret_cast<const uint4*>(w + n * K);
  const uint4* xr = reinterpret_cast<const uint4*>(x);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  for (int64_t c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + 32 * u;
      // w is read once: keep it out of L1 (x is what gets reused).
      wv[u] = c < chunks ? __ldcs(wr + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c0 + 32 * u;
      if (c < chunks) {
#pragma unroll
        for (int m = 0; m < M; ++m) acc[m] = dot8(wv[u], __ldg(xr + m * chunks + c), acc[m]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], o);
  }
  if (lane == 0) {
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float* dst = y + m * N + n;
      *dst = accumulate ? *dst + acc[m] : acc[m];
    }
  }
}

template <int M>
void launch_skinny(const bf16* x, const bf16* w, float* y, int64_t N, int64_t K, bool accumulate,
                   cudaStream_t stream) {
  gemm_skinny_kernel<M><<<static_cast<unsigned>((N + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      x, w, y, N, K, accumulate);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void gemm_bf16_nt(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t M,
                  int64_t N, int64_t K, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (M <= kSkinnyMaxRows && K % 8 == 0 && aligned16(x) && aligned16(w)) {
    cudaStream_t stream = nullptr;
    LAGSERVE_CUBLAS_CHECK(cublasGetStream(handle, &stream));
    switch (M) {
      case 1: return launch_skinny<1>(x, w, y, N, K, accumulate, stream);
      case 2: return launch_skinny<2>(x, w, y, N, K, accumulate, stream);
      case 3: return launch_skinny<3>(x, w, y, N, K, accumulate, stream);
      case 4: return launch_skinny<4>(x, w, y, N, K, accumulate, stream);
      case 5: return launch_skinny<5>(x, w, y, N, K, accumulate, stream);
      case 6: return launch_skinny<6>(x, w, y, N, K, accumulate, stream);
      case 7: return launch_skinny<7>(x, w, y, N, K, accumulate, stream);
      default: return launch_skinny<8>(x, w, y, N, K, accumulate, stream);
    }
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: y^T [N, M] = w [N, K] (a K x N column-major matrix,
  // transposed) times x^T [K, M] (x as a K x M column-major matrix).
  LAGSERVE_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                                     static_cast<int>(M), static_cast<int>(K), &alpha, w,
                                     CUDA_R_16BF, static_cast<int>(K), x, CUDA_R_16BF,
                                     static_cast<int>(K), &beta, y, CUDA_R_32F,
                                     static_cast<int>(N), CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

}  // namespace lagserve::kernels::cuda
