// lag_select: one CTA per row; each offset's rank under (score desc, offset
// asc) is counted against the whole row in shared memory, O(L^2 / threads):
// a few microseconds for L = 1024, and exact with ties by construction.
#include "kernels/cuda/lag_select.h"

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int32_t kMaxSharedLag = 12 * 1024;  // 48 KiB of scores; longer rows read global memory

__global__ __launch_bounds__(kThreads) void lag_select_kernel(const float* scores, int32_t L,
                                                              int32_t k, uint8_t* selected) {
  extern __shared__ float row_smem[];
  const float* src = scores + static_cast<int64_t>(blockIdx.x) * L;
  const float* row = src;
  if (L <= kMaxSharedLag) {
    for (int i = threadIdx.x; i < L; i += kThreads) row_smem[i] = src[i];
    __syncthreads();
    row = row_smem;
  }
  uint8_t* out = selected + static_cast<int64_t>(blockIdx.x) * L;
  for (int i = threadIdx.x; i < L; i += kThreads) {
    const float s = row[i];
    // rank = how many offsets come before i in (score desc, offset asc).
    int32_t rank = 0;
    for (int j = 0; j < i; ++j) rank += row[j] >= s;
    for (int j = i + 1; j < L; ++j) rank += row[j] > s;
    out[i] = rank < k ? 1 : 0;
  }
}

}  // namespace

void lag_select(const float* scores, int32_t n_rows, int32_t L, int32_t k, uint8_t* selected,
                cudaStream_t stream) {
  if (n_rows <= 0) return;
  if (k < 1 || k > L) {
    std::fprintf(stderr, "lagserve: lag_select needs 1 <= k <= L, got k %d, L %d\n", k, L);
    std::abort();
  }
  const size_t smem = L <= kMaxSharedLag ? sizeof(float) * L : 0;
  lag_select_kernel<<<static_cast<unsigned>(n_rows), kThreads, smem, stream>>>(scores, L, k,
                                                                              selected);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
