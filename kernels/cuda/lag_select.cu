// lag_select: one CTA per (due partition, KV head, batch entry), that is one
// row; CTAs past their entry's n_due return at once. Each offset's rank under
// (score desc, offset asc) is counted against the whole row in shared memory,
// O(L^2 / threads): a few microseconds for L = 1024, and exact with ties by
// construction.
#include "kernels/cuda/lag_select.h"

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int32_t kMaxSharedLag = 12 * 1024;  // 48 KiB of scores; longer rows read global memory
constexpr int32_t kMaxGridYz = 65535;  // entries (grid z) and KV heads (grid y)

// Grid (max_due, n_kv_heads, n_works); max_lag floats of shared memory when
// max_lag <= kMaxSharedLag, else none.
__global__ __launch_bounds__(kThreads) void lag_select_kernel(const float* scores,
                                                              const LagWork* works,
                                                              int32_t max_lag, uint8_t* selected) {
  const LagWork work = works[blockIdx.z];
  const int r = blockIdx.x, h = blockIdx.y;
  // Block-uniform returns, before the barrier.
  if (r >= work.n_due) return;
  const int32_t L = work.lag, k = work.keep, n_due = work.n_due;
  if (n_due > static_cast<int32_t>(gridDim.x) || L > max_lag || k < 1 || k > L) {
    if (r == 0 && h == 0 && threadIdx.x == 0) {
      printf("lagserve: lag_select entry %u needs n_due <= max_due %u and 1 <= k <= L <= max_lag "
             "%d, got n_due %d, k %d, L %d\n", blockIdx.z, gridDim.x, max_lag, n_due, k, L);
      __trap();
    }
    return;
  }
  extern __shared__ float row_smem[];
  const int64_t row_begin = (static_cast<int64_t>(h) * n_due + r) * L;
  const float* src = scores + work.score_offset + row_begin;
  const float* row = src;
  if (max_lag <= kMaxSharedLag) {
    for (int i = threadIdx.x; i < L; i += kThreads) row_smem[i] = src[i];
    __syncthreads();
    row = row_smem;
  }
  uint8_t* out = selected + work.sel_offset + row_begin;
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

void lag_select(const float* scores, const LagWork* works, int32_t n_works, int32_t n_kv_heads,
                int32_t max_due, int32_t max_lag, uint8_t* selected, cudaStream_t stream) {
  if (n_works <= 0 || n_kv_heads <= 0 || max_due <= 0) return;
  if (max_lag < 1 || n_works > kMaxGridYz || n_kv_heads > kMaxGridYz) {
    std::fprintf(stderr, "lagserve: lag_select needs max_lag >= 1 and at most %d entries and KV "
                 "heads, got max_lag %d, %d entries, %d KV heads\n", kMaxGridYz, max_lag, n_works,
                 n_kv_heads);
    std::abort();
  }
  const size_t smem = max_lag <= kMaxSharedLag ? sizeof(float) * max_lag : 0;
  const dim3 grid(static_cast<unsigned>(max_due), static_cast<unsigned>(n_kv_heads),
                  static_cast<unsigned>(n_works));
  lag_select_kernel<<<grid, kThreads, smem, stream>>>(scores, works, max_lag, selected);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
