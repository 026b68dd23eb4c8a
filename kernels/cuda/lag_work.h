// One sequence's LagKV work in one layer, as the batched GPU ops (lag_score,
// lag_select, kv_compact) read it: plain 32-bit words, so that the host can
// memcpy an array of them into its int32 step metadata.
#pragma once

#include <cstdint>

namespace lagserve::kernels::cuda {

// Entry of a batch: the sequence whose block table starts at tables +
// table_offset has n_due due partitions at cache indices [region, region +
// n_due * lag), each followed by its reference partition (the next lag
// indices), and compaction moves sources out of [region, end).
// n_due <= 0: every op skips the entry (its blocks return at once).
// The *_offset fields are element offsets into the buffers of the call; the
// host lays the entries' outputs out so that no two overlap.
struct LagWork {
  int32_t table_offset = 0;    // its block table starts at tables + table_offset
  int32_t region = 0;          // cache index where the due partitions start
  int32_t n_due = 0;           // due partitions; <= 0: nothing to do for this entry
  int32_t lag = 0;             // L, partition size
  int32_t keep = 0;            // k, entries kept per partition and KV head (top-k)
  float v_weight = 0.f;        // w: score = score(K) + w * score(V)
  int32_t end = 0;             // compaction: entries [region, end) are the sources
  int32_t score_offset = 0;    // floats: scores + score_offset, [n_kv_heads, n_due, L]
  int32_t sel_offset = 0;      // bytes: selected + sel_offset, [n_kv_heads, n_due, L]
  int32_t scratch_offset = 0;  // bf16 elements, a multiple of 8: scratch + scratch_offset
  int32_t pad[2] = {0, 0};
};
static_assert(sizeof(LagWork) == 12 * sizeof(int32_t) && sizeof(LagWork) % 16 == 0,
              "LagWork is copied as int32 words");

}  // namespace lagserve::kernels::cuda
