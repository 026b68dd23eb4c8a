// In-place compaction of one sequence's layer on the GPU (DESIGN.md section 1,
// "Compression works in place"): the selected entries of the due partitions,
// then everything after them, move forward, every KV head at once.
// Reference: kernels/cpu/kv_compact.h (kv_compact_reference, per head).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

// bf16 elements of scratch that kv_compact needs:
// 2 * n_kv_heads * (end - region) * head_dim (0 when end <= region).
int64_t kv_compact_scratch_elems(int32_t n_kv_heads, int32_t head_dim, int32_t region,
                                 int32_t end);

// For each kv head h, the source list is: the entries region + r*L + off with
// selected[(h * n_due + r) * L + off] != 0, ascending (r in [0, n_due)), then
// every entry of [region + n_due * L, end). Source j (counted from 0) moves,
// K and V, to cache index region + j. Entries of the head from region + (list
// length) on, and before region, are left as they were. Two kernels (gather
// into scratch, scatter back), so the overlapping moves are safe.
// selected: [n_kv_heads, n_due, L] (nonzero = kept); scratch: at least
// kv_compact_scratch_elems(...) elements, contents on return unspecified.
// Preconditions: head_dim even; region + n_due * L <= end; [region, end) lies
// inside block_table. Nothing to do when end <= region.
void kv_compact(const PagedKvBf16& kv, const int32_t* block_table, const uint8_t* selected,
                int32_t region, int32_t n_due, int32_t L, int32_t end, bf16* scratch,
                cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
