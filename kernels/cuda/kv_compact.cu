// kv_compact: the destination of every source entry is its rank among the
// kept entries of its head (a prefix count of `selected`), so each CTA of a
// chunk of sources (one per chunk, KV head and batch entry) computes the ranks
// itself; a gather kernel copies the entries that move into scratch, and a
// scatter kernel, recomputing the same ranks, copies them to their
// destinations. Entries already in place (a leading kept run) are not copied
// at all. CTAs past their entry's sources return at once.
#include "kernels/cuda/kv_compact.h"

#include <cstdio>
#include <cstdlib>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // source entries per CTA
constexpr int32_t kMaxGridYz = 65535;  // entries (grid z) and KV heads (grid y)

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
// An entry's scratch: K then V, each [n_kv_heads, n_src, head_dim]. Vec: 16 or 4
// bytes of bf16. Grid (chunks of max_src, n_kv_heads, n_works).
template <typename Vec, bool kGather>
__global__ __launch_bounds__(kThreads) void kv_compact_kernel(PagedKvBf16 kv, const int32_t* tables,
                                                              const LagWork* works,
                                                              const uint8_t* selected,
                                                              bf16* scratch) {
  __shared__ int32_t src[kThreads], pos[kThreads];
  const LagWork work = works[blockIdx.z];
  const int h = blockIdx.y;
  const int32_t c0 = blockIdx.x * kThreads, region = work.region, n_src = work.end - region;
  // Block-uniform returns, before the barriers of chunk_moves.
  if (work.n_due <= 0 || c0 >= n_src) return;
  if (work.lag < 1 || static_cast<int64_t>(work.n_due) * work.lag > n_src ||
      n_src > static_cast<int64_t>(gridDim.x) * kThreads || work.scratch_offset < 0 ||
      work.scratch_offset % 8 != 0) {
    if (blockIdx.x == 0 && h == 0 && threadIdx.x == 0) {
      printf("lagserve: kv_compact entry %u needs L >= 1, region + n_due * L <= end, end - region "
             "<= max_src %lld and scratch_offset a multiple of 8, got region %d, n_due %d, L %d, "
             "end %d, scratch_offset %d\n", blockIdx.z,
             static_cast<long long>(gridDim.x) * kThreads, region, work.n_due, work.lag, work.end,
             work.scratch_offset);
      __trap();
    }
    return;
  }
  const int32_t due = work.n_due * work.lag;
  const int32_t n_moves = chunk_moves(selected + work.sel_offset + static_cast<int64_t>(h) * due,
                                      due, n_src, c0, src, pos);
  const int32_t* table = tables + work.table_offset;
  bf16* const scr = scratch + work.scratch_offset;
  constexpr int kPerVec = sizeof(Vec) / sizeof(bf16);
  const int d = kv.head_dim, n_vec = d / kPerVec;
  const int64_t v_part = static_cast<int64_t>(kv.n_kv_heads) * n_src * d;
  for (int idx = threadIdx.x; idx < n_moves * n_vec; idx += kThreads) {
    const int e = idx / n_vec, j = (idx % n_vec) * kPerVec;
    const int64_t s = (static_cast<int64_t>(h) * n_src + pos[e]) * d + j;
    if constexpr (kGather) {
      const int64_t c = kv.offset(table, h, region + src[e]) + j;
      *reinterpret_cast<Vec*>(scr + s) = *reinterpret_cast<const Vec*>(kv.k + c);
      *reinterpret_cast<Vec*>(scr + v_part + s) = *reinterpret_cast<const Vec*>(kv.v + c);
    } else {
      const int64_t c = kv.offset(table, h, region + pos[e]) + j;
      *reinterpret_cast<Vec*>(kv.k + c) = *reinterpret_cast<const Vec*>(scr + s);
      *reinterpret_cast<Vec*>(kv.v + c) = *reinterpret_cast<const Vec*>(scr + v_part + s);
    }
  }
}

template <typename Vec>
void launch(const PagedKvBf16& kv, const int32_t* tables, const LagWork* works, int32_t n_works,
            int32_t max_src, const uint8_t* selected, bf16* scratch, cudaStream_t stream) {
  const dim3 grid(blocks_for(max_src, kThreads), static_cast<unsigned>(kv.n_kv_heads),
                  static_cast<unsigned>(n_works));
  // NOTE: every entry's gather finishes before any scatter starts (two
  // launches, stream order), so no move reads an entry another has written.
  kv_compact_kernel<Vec, true><<<grid, kThreads, 0, stream>>>(kv, tables, works, selected,
                                                              scratch);
  LAGSERVE_CUDA_CHECK_LAUNCH();
  kv_compact_kernel<Vec, false><<<grid, kThreads, 0, stream>>>(kv, tables, works, selected,
                                                               scratch);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int64_t kv_compact_scratch_elems(int32_t n_kv_heads, int32_t head_dim, int32_t region,
                                 int32_t end) {
  if (end <= region) return 0;
  const int64_t elems = 2 * static_cast<int64_t>(n_kv_heads) * (end - region) * head_dim;
  return (elems + 7) / 8 * 8;  // keeps the next entry's scratch 16-byte aligned
}

void kv_compact(const PagedKvBf16& kv, const int32_t* tables, const LagWork* works, int32_t n_works,
                int32_t max_src, const uint8_t* selected, bf16* scratch, cudaStream_t stream) {
  if (n_works <= 0 || max_src <= 0 || kv.n_kv_heads <= 0) return;
  if (kv.head_dim < 2 || kv.head_dim % 2 != 0 || n_works > kMaxGridYz ||
      kv.n_kv_heads > kMaxGridYz) {
    std::fprintf(stderr, "lagserve: kv_compact needs an even head_dim and at most %d entries and "
                 "KV heads, got head_dim %d, %d entries, %d KV heads\n", kMaxGridYz, kv.head_dim,
                 n_works, kv.n_kv_heads);
    std::abort();
  }
  if (kv.head_dim % 8 == 0 && aligned16(kv.k) && aligned16(kv.v) && aligned16(scratch)) {
    launch<uint4>(kv, tables, works, n_works, max_src, selected, scratch, stream);
  } else {
    launch<uint32_t>(kv, tables, works, n_works, max_src, selected, scratch, stream);
  }
}

}  // namespace lagserve::kernels::cuda
