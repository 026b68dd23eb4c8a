// gemm_small_bf16: one block of 8 warps per 16 output features. The block's
// 16 weight rows go to shared memory by cp.async before pdl_wait (weights are
// never written); after it the (at most) 32 input rows follow. Warp w takes
// the k16 steps w, w + 8, ...: an A fragment of the weights (16 features) and
// B fragments of the rows (n8 tiles), mma.m16n8k16; the eight warps' partial
// sums meet in shared memory and are added in warp order.
//
// Shared rows are K + 8 elements apart: 16 bytes past a multiple of 128, so
// the 8 rows an ldmatrix phase reads fall in 8 different bank groups.
#include "kernels/cuda/gemm_small.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mma_sm80.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kFeatures = 16;  // output features per block: one m16 tile
constexpr int kRows = static_cast<int>(kGemmSmallMaxRows);
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

// The weights, then the rows; after the mma, the warps' sums over the rows.
size_t smem_bytes(int64_t K) {
  const size_t row = static_cast<size_t>(K + 8) * sizeof(bf16);
  return kFeatures * row + std::max(kRows * row, sizeof(float) * kWarps * kRows * kFeatures);
}

__global__ void __launch_bounds__(kThreads)
gemm_small_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, float* __restrict__ y,
                  int32_t M, int32_t N, int32_t K, bool accumulate) {
  pdl_release();
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int ld = K + 8;
  bf16* const w_s = reinterpret_cast<bf16*>(smem_raw);  // [kFeatures][ld]
  bf16* const x_s = w_s + kFeatures * ld;               // [kRows][ld]
  const int n0 = blockIdx.x * kFeatures;
  const int chunks = K / 8;  // 16-byte chunks of a row

  for (int c = tid; c < kFeatures * chunks; c += kThreads) {
    const int r = c / chunks, ch = c % chunks;
    cp_async16(smem_u32(w_s + r * ld + ch * 8), w + static_cast<int64_t>(n0 + r) * K + ch * 8, true);
  }
  cp_async_commit();
  pdl_wait();  // the rows may be the kernel before's output
  for (int c = tid; c < kRows * chunks; c += kThreads) {
    const int r = c / chunks, ch = c % chunks;
    const bool valid = r < M;  // rows past M are zeros
    cp_async16(smem_u32(x_s + r * ld + ch * 8), x + (valid ? static_cast<int64_t>(r) * K + ch * 8 : 0),
               valid);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int pairs = (M + 15) / 16;  // pairs of n8 row tiles that hold a row
  float acc[kRows / 8][4];
#pragma unroll
  for (int rt = 0; rt < kRows / 8; ++rt) acc[rt][0] = acc[rt][1] = acc[rt][2] = acc[rt][3] = 0.f;
  for (int ks = warp; ks < K / 16; ks += kWarps) {
    // A: features 0..7 / 8..15 at k 0..7, then 8..15 (a0..a3).
    uint32_t a[4];
    ldmatrix_x4(a, smem_u32(w_s + ((lane & 7) + ((lane >> 3) & 1) * 8) * ld + ks * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int p = 0; p < kRows / 16; ++p) {
      if (p < pairs) {
        // B: rows 16p + 0..7 at k 0..7 / 8..15, then rows 16p + 8..15.
        uint32_t b[4];
        const int row = 16 * p + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(b, smem_u32(x_s + row * ld + ks * 16 + ((lane >> 3) & 1) * 8));
        mma_bf16(acc[2 * p], a, b[0], b[1]);
        mma_bf16(acc[2 * p + 1], a, b[2], b[3]);
      }
    }
  }

  // The warps' sums, [kWarps][kRows][kFeatures], over the rows' staging area.
  __syncthreads();
  float* const red = reinterpret_cast<float*>(x_s);
#pragma unroll
  for (int rt = 0; rt < kRows / 8; ++rt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float* const dst = red + (warp * kRows + rt * 8 + 2 * t + e) * kFeatures;
      dst[g] = acc[rt][e];
      dst[g + 8] = acc[rt][2 + e];
    }
  }
  __syncthreads();
  for (int e = tid; e < kFeatures * M; e += kThreads) {
    const int r = e / kFeatures, f = e % kFeatures;
    float s = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarps; ++wi) s += red[(wi * kRows + r) * kFeatures + f];
    float* const out = y + static_cast<int64_t>(r) * N + n0 + f;
    *out = accumulate ? *out + s : s;
  }
}

// The most dynamic shared memory a block may have, which the kernel is given
// on first use. NOTE: read and set once per process, for the device current
// then: a process that drives several GPUs (tensor parallelism) does not use
// this kernel.
int optin_smem() {
  static const int optin = [] {
    int device = 0, bytes = 0;
    LAGSERVE_CUDA_CHECK(cudaGetDevice(&device));
    LAGSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    LAGSERVE_CUDA_CHECK(cudaFuncSetAttribute(gemm_small_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return bytes;
  }();
  return optin;
}

}  // namespace

bool gemm_small_supports(int64_t N, int64_t K) {
  if (N <= 0 || K <= 0 || N % kFeatures != 0 || K % 16 != 0 || N > (int64_t{1} << 30)) return false;
  return smem_bytes(K) <= static_cast<size_t>(optin_smem());
}

void gemm_small_bf16(const bf16* x, const bf16* w, float* y, int64_t M, int64_t N, int64_t K,
                     bool accumulate, cudaStream_t stream) {
  if (M < 0 || M > kGemmSmallMaxRows || !gemm_small_supports(N, K)) {
    throw std::invalid_argument("gemm_small_bf16: no kernel for M=" + std::to_string(M) + ", N=" +
                                std::to_string(N) + ", K=" + std::to_string(K));
  }
  if (M == 0) return;
  const size_t smem = smem_bytes(K);
  launch_pdl(gemm_small_kernel, dim3(static_cast<unsigned>(N / kFeatures)), dim3(kThreads), smem, stream, x,
             w, y, static_cast<int32_t>(M), static_cast<int32_t>(N), static_cast<int32_t>(K), accumulate);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
