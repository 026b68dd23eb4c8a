// Paged decode attention on the GPU: one new query token per sequence over
// its whole cache, for a batch of sequences in one launch. GQA (the query
// heads of a KV head share its loads) and split-K: long contexts are cut into
// splits that run in parallel and are merged by a second kernel (log-sum-exp
// rescaling), so a few long sequences still fill the GPU.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

// One query row. Plain int32 fields (the backend copies items into an int32
// buffer); 32 bytes. A prefill chunk of n rows of one sequence is n items
// with ctx_len = cache_len + 1 + i.
// Optional LagKV mask (mask_len > 0): key j is hidden from this row iff
// mask_begin <= j < min(hide_end, mask_begin + mask_len) and, for kv head h,
// selected[sel_offset + h * mask_len + (j - mask_begin)] == 0 — the same rule
// as kernels::PartitionMask with mask_len = n_partitions * lag and
// hide_end = begin + (hide_upto[i] + 1) * lag.
struct DecodeItem {
  int32_t table_offset = 0;  // the sequence's block table starts at tables + table_offset
  int32_t ctx_len = 0;       // keys: cache indices [0, ctx_len), the new token's included
  int32_t row = 0;           // row of q and of out
  int32_t mask_begin = 0;    // cache index where the masked region starts
  int32_t mask_len = 0;      // n_partitions * lag; 0: no mask for this item
  int32_t hide_end = 0;      // keys in [mask_begin, hide_end) may be hidden; <= mask_begin: none
  int32_t sel_offset = 0;    // the flags: selected + sel_offset, [n_kv_heads, mask_len]
  // Keys [0, cached_len) were in the cache before the step's first kernel:
  // no kernel launched after them writes them, so the tensor-core kernel may
  // start loading them before its pdl_wait (kernels/cuda/pdl.h). 0: none.
  int32_t cached_len = 0;
};
static_assert(sizeof(DecodeItem) == 8 * sizeof(int32_t) && sizeof(DecodeItem) % 16 == 0,
              "DecodeItem is copied as int32 words");

// How a batch is split: keys per split and the most splits of one item.
struct DecodePlan {
  int32_t split_len = 0;
  int32_t max_splits = 0;
};

// max_ctx: the largest ctx_len; total_ctx: their sum over the n_items items;
// sm_count: the device's multiprocessors (the split length is chosen so that
// the blocks fill whole waves).
DecodePlan decode_attention_plan(int32_t max_ctx, int64_t total_ctx, int32_t n_items,
                                 int32_t n_kv_heads, int32_t sm_count);

// fp32 workspace that decode_attention needs for n_items under `plan`.
int64_t decode_attention_workspace(const DecodePlan& plan, int32_t n_items, int32_t n_heads,
                                   int32_t head_dim);

// For each item: out[row, h, :] = softmax(scale * q[row, h, :] . K[j]) V[j] over
// cache indices j in [0, ctx_len), query head h reading kv head
// h / (n_heads / n_kv_heads). q fp32 with row stride q_row_stride (the
// [n_heads, head_dim] heads first); out bf16, row stride out_row_stride.
// Keys an item's mask hides (see DecodeItem) are left out; selected is a
// device array of 0/1 flags. selected == nullptr: every item's mask fields are
// ignored and the fastest kernel runs (tensor cores where head_dim is 64 or 128
// and block_size a multiple of 16, see decode_attention_tc.cu); pass it so for
// pure decode.
// A row that sees no key at all gets zeros (never happens in practice: keys
// before mask_begin are always visible).
// items, tables and selected are device arrays. head_dim 16, 32, 64 or 128,
// group size 1..8.
void decode_attention(const PagedKvBf16& kv, const int32_t* tables, const DecodeItem* items,
                      int32_t n_items, const DecodePlan& plan, const float* q,
                      int64_t q_row_stride, bf16* out, int64_t out_row_stride, int32_t n_heads,
                      float scale, const uint8_t* selected, float* workspace,
                      cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
