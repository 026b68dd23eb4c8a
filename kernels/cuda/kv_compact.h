// In-place compaction on the GPU (DESIGN.md section 1, "Compression works in
// place") for a batch of sequences in one layer: in each, the selected
// entries of the due partitions, then everything after them, move forward,
// every KV head at once. Reference: kernels/cpu/kv_compact.h
// (kv_compact_reference, per head).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/lag_work.h"
#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

// bf16 elements of scratch that one entry of kv_compact needs:
// 2 * n_kv_heads * (end - region) * head_dim rounded up to a multiple of 8
// (0 when end <= region), so that running sums of it are valid scratch_offsets.
int64_t kv_compact_scratch_elems(int32_t n_kv_heads, int32_t head_dim, int32_t region,
                                 int32_t end);

// For each entry W = works[e] (e < n_works) with W.n_due > 0, L = W.lag, in the
// cache of the table at tables + W.table_offset, and each kv head h: the source
// list is the entries W.region + r*L + off with
// selected[W.sel_offset + (h * W.n_due + r) * L + off] != 0, ascending
// (r in [0, n_due)), then every entry of [W.region + n_due * L, W.end). Source
// j (counted from 0) moves, K and V, to cache index W.region + j. Entries of
// the head from W.region + (list length) on, and before W.region, are left as
// they were. Two kernels for the whole batch (gather into scratch, scatter
// back), so the overlapping moves are safe.
// Entry e uses scratch + W.scratch_offset, kv_compact_scratch_elems(n_kv_heads,
// head_dim, W.region, W.end) elements, contents on return unspecified.
// max_src: at least the largest end - region of the entries with n_due > 0
// (it sizes the grid).
// Preconditions: head_dim even; n_works <= 65535; per entry with n_due > 0
// and end > region: L >= 1, region + n_due * L <= end, end - region <= max_src,
// scratch_offset >= 0 and a multiple of 8 (a kernel that finds one broken
// prints it and traps); [region, end) lies inside its table; no two entries
// share a cache slot of [region, end) or scratch. works, tables, selected,
// scratch: device memory. n_works <= 0 or max_src <= 0: no-op.
void kv_compact(const PagedKvBf16& kv, const int32_t* tables, const LagWork* works, int32_t n_works,
                int32_t max_src, const uint8_t* selected, bf16* scratch, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
