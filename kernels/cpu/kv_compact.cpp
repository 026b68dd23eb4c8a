// kv_compact: moves the kept cache entries of one KV head forward, in place,
// one row (head_dim floats of K and of V) per memcpy; and its plain reference.
#include "kernels/cpu/kv_compact.h"

#include <cstring>

namespace lagserve::kernels {
namespace {

int64_t row_offset(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                   int32_t index) {
  return kv.slot_offset(block_table[index / kv.block_size], kv_head, index % kv.block_size);
}

}  // namespace

void kv_compact(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                const int32_t* src, int32_t n, int32_t dst_begin) {
  const size_t row_bytes = static_cast<size_t>(kv.head_dim) * sizeof(float);
  for (int32_t i = 0; i < n; ++i) {
    if (src[i] == dst_begin + i) continue;  // already in place (a leading kept run)
    // Distinct cache indices are distinct rows, so the copies never overlap.
    const int64_t from = row_offset(kv, block_table, kv_head, src[i]);
    const int64_t to = row_offset(kv, block_table, kv_head, dst_begin + i);
    std::memcpy(kv.k_pool + to, kv.k_pool + from, row_bytes);
    std::memcpy(kv.v_pool + to, kv.v_pool + from, row_bytes);
  }
}

void kv_compact_reference(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                          const int32_t* src, int32_t n, int32_t dst_begin) {
  for (int32_t i = 0; i < n; ++i) {
    const int32_t from = src[i];
    const int32_t to = dst_begin + i;
    for (int32_t c = 0; c < kv.head_dim; ++c) {
      const int64_t f = kv.slot_offset(block_table[from / kv.block_size], kv_head,
                                       from % kv.block_size) + c;
      const int64_t t = kv.slot_offset(block_table[to / kv.block_size], kv_head,
                                       to % kv.block_size) + c;
      kv.k_pool[t] = kv.k_pool[f];
      kv.v_pool[t] = kv.v_pool[f];
    }
  }
}

}  // namespace lagserve::kernels
