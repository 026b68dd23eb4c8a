// kv_compact: the destination of every source entry is its rank among the
// kept entries of its head (a prefix count of `selected`), so each CTA of a
// chunk of sources computes the ranks itself; a gather kernel copies the
// entries that move into scratch, and a scatter kernel, recomputing the same
// ranks, copies them to their destinations. Entries already in place (a
// leading kept run) are not copied at all.
#include "kernels/cuda/kv_compact.h"

#include <cstdio>
#include <cstdlib>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // source entries per CTA

using BlockScan = cub::BlockScan<int32_t, kThreads>;
using BlockReduce = cub::BlockReduce<int32_t, kThreads>;

// The moves of this CTA's chunk of sources, c in [c0, c0 + kThreads) (offsets
// from region): move e takes source c = src[e] to destination pos[e] (both
// offsets from region). Returns the number of moves; same result in every CTA
// that asks, which is what lets the scatter kernel recompute it.
__device__ int32_t chunk_moves(const uint8_t* sel_h, int32_t due, int32_t n_src, int32_t c0,
                               int32_t* src, int32_t* pos) {
  __shared__ union {
    BlockScan::TempStorage scan;
    BlockReduce::TempStorage reduce;
  } tmp;
  __shared__ int32_t kept_before_s;
  const int tid = threadIdx.x;
  // Sources before the chunk that are kept: selected ones of the due region,
  // and every one after it.
  const int32_t due_before = c0 < due ? c0 : due;
  int32_t count = 0;
  for (int32_t c = tid; c < due_before; c += kThreads) count += sel_h[c] != 0;
  count = BlockReduce(tmp.reduce).Sum(count);
  if (tid == 0) kept_before_s = count + (c0 > due ? c0 - due : 0);
  __syncthreads();
  const int32_t kept_before = kept_before_s;

  const int32_t c = c0 + tid;
  const int32_t kept = c < n_src && (c >= due || sel_h[c] != 0) ? 1 : 0;
  int32_t rank = 0;
  BlockScan(tmp.scan).ExclusiveSum(kept, rank);
  __syncthreads();
  const int32_t dst = kept_before + rank;
  const int32_t moves = kept && dst != c ? 1 : 0;
  int32_t slot = 0, n_moves = 0;
  BlockScan(tmp.scan).ExclusiveSum(moves, slot, n_moves);
  if (moves) {
    src[slot] = c;
    pos[slot] = dst;
  }
  __syncthreads();
  return n_moves;
}

// kGather: cache[region + src] -> scratch[pos]; else scratch[pos] -> cache[region + pos].
// scratch: K then V, each [n_kv_heads, n_src, head_dim]. Vec: 16 or 4 bytes of bf16.
template <typename Vec, bool kGather>
__global__ __launch_bounds__(kThreads) void kv_compact_kernel(PagedKvBf16 kv, const int32_t* table,
                                                              const uint8_t* selected,
                                                              int32_t region, int32_t due,
                                                              int32_t n_src, bf16* scratch) {
  __shared__ int32_t src[kThreads], pos[kThreads];
  const int h = blockIdx.y;
  const int32_t n_moves = chunk_moves(selected + static_cast<int64_t>(h) * due, due, n_src,
                                      blockIdx.x * kThreads, src, pos);
  constexpr int kPerVec = sizeof(Vec) / sizeof(bf16);
  const int d = kv.head_dim, n_vec = d / kPerVec;
  const int64_t v_part = static_cast<int64_t>(kv.n_kv_heads) * n_src * d;
  for (int idx = threadIdx.x; idx < n_moves * n_vec; idx += kThreads) {
    const int e = idx / n_vec, j = (idx % n_vec) * kPerVec;
    const int64_t s = (static_cast<int64_t>(h) * n_src + pos[e]) * d + j;
    if constexpr (kGather) {
      const int64_t c = kv.offset(table, h, region + src[e]) + j;
      *reinterpret_cast<Vec*>(scratch + s) = *reinterpret_cast<const Vec*>(kv.k + c);
      *reinterpret_cast<Vec*>(scratch + v_part + s) = *reinterpret_cast<const Vec*>(kv.v + c);
    } else {
      const int64_t c = kv.offset(table, h, region + pos[e]) + j;
      *reinterpret_cast<Vec*>(kv.k + c) = *reinterpret_cast<const Vec*>(scratch + s);
      *reinterpret_cast<Vec*>(kv.v + c) = *reinterpret_cast<const Vec*>(scratch + v_part + s);
    }
  }
}

template <typename Vec>
void launch(const PagedKvBf16& kv, const int32_t* table, const uint8_t* selected, int32_t region,
            int32_t due, int32_t n_src, bf16* scratch, cudaStream_t stream) {
  const dim3 grid(blocks_for(n_src, kThreads), static_cast<unsigned>(kv.n_kv_heads));
  kv_compact_kernel<Vec, true><<<grid, kThreads, 0, stream>>>(kv, table, selected, region, due,
                                                              n_src, scratch);
  LAGSERVE_CUDA_CHECK_LAUNCH();
  kv_compact_kernel<Vec, false><<<grid, kThreads, 0, stream>>>(kv, table, selected, region, due,
                                                               n_src, scratch);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int64_t kv_compact_scratch_elems(int32_t n_kv_heads, int32_t head_dim, int32_t region,
                                 int32_t end) {
  return end > region ? 2 * static_cast<int64_t>(n_kv_heads) * (end - region) * head_dim : 0;
}

void kv_compact(const PagedKvBf16& kv, const int32_t* block_table, const uint8_t* selected,
                int32_t region, int32_t n_due, int32_t L, int32_t end, bf16* scratch,
                cudaStream_t stream) {
  if (end <= region || kv.n_kv_heads <= 0) return;
  const int32_t n_src = end - region, due = n_due > 0 ? n_due * L : 0;
  if (kv.head_dim < 2 || kv.head_dim % 2 != 0 || due > n_src) {
    std::fprintf(stderr, "lagserve: kv_compact needs an even head_dim and region + n_due * L <= "
                 "end, got head_dim %d, region %d, n_due %d, L %d, end %d\n",
                 kv.head_dim, region, n_due, L, end);
    std::abort();
  }
  if (kv.head_dim % 8 == 0 && aligned16(kv.k) && aligned16(kv.v) && aligned16(scratch)) {
    launch<uint4>(kv, block_table, selected, region, due, n_src, scratch, stream);
  } else {
    launch<uint32_t>(kv, block_table, selected, region, due, n_src, scratch, stream);
  }
}

}  // namespace lagserve::kernels::cuda
