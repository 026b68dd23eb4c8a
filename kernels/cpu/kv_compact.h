// In-place compaction of one KV head's paged cache: the kept entries move
// forward (DESIGN.md section 1, "Compression works in place").
#pragma once

#include <cstdint>

#include "kernels/cpu/paged_attention.h"

namespace lagserve::kernels {

// Moves K and V of cache entries src[0..n) to cache indices dst_begin,
// dst_begin + 1, ... for kv_head; entries outside [dst_begin, dst_begin + n)
// are left as they were. Preconditions: src ascending, src[i] >= dst_begin + i
// (so moving in ascending order never overwrites a source still to be read),
// every index inside the block table.
void kv_compact(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                const int32_t* src, int32_t n, int32_t dst_begin);

// Plain reference: element by element through the block table.
void kv_compact_reference(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                          const int32_t* src, int32_t n, int32_t dst_begin);

}  // namespace lagserve::kernels
