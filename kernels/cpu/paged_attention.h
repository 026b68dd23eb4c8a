// Attention of new query tokens over a paged KV cache, plus writing new K/V
// into it. The cache of one layer is a pool of blocks:
//   k_pool, v_pool: [n_blocks, n_kv_heads, block_size, head_dim]
// and a sequence's block table lists the blocks that hold its cache indices
// 0, 1, 2, ... in order (index i lives in block_table[i / block_size]).
#pragma once

#include <cstdint>

namespace lagserve::kernels {

class ThreadPool;

struct PagedKv {
  float* k_pool = nullptr;
  float* v_pool = nullptr;
  int32_t n_kv_heads = 0;
  int32_t block_size = 0;
  int32_t head_dim = 0;

  int64_t slot_offset(int32_t block, int32_t kv_head, int32_t slot) const {
    return ((static_cast<int64_t>(block) * n_kv_heads + kv_head) * block_size + slot) * head_dim;
  }
};

// Writes n_new tokens' K and V (rows of k_src/v_src, [n_new, n_kv_heads,
// head_dim] with row strides) at cache indices first_index .. first_index+n_new-1.
void paged_kv_write(const PagedKv& kv, const int32_t* block_table, int32_t first_index,
                    int32_t n_new, const float* k_src, const float* v_src, int64_t src_row_stride);

// Keys that some queries of a step may not see: LagKV partitions that this
// step scores and compacts. The region [begin, begin + n_partitions * lag) of
// cache indices holds n_partitions whole partitions; key j there belongs to
// partition r = (j - begin) / lag (counted from the region's start). Query i
// does not see key j when r <= hide_upto[i] and the key is not selected for
// its KV head (selected[kv_head * n_partitions * lag + (j - begin)] == 0).
struct PartitionMask {
  int32_t begin = 0;
  int32_t n_partitions = 0;
  int32_t lag = 0;
  const uint8_t* selected = nullptr;  // [n_kv_heads, n_partitions * lag]
  const int32_t* hide_upto = nullptr;  // [n_q]; -1: the query sees the whole region

  bool hidden(int32_t i, int32_t kv_head, int32_t j) const {
    const int32_t off = j - begin;
    if (off < 0 || off >= n_partitions * lag || off / lag > hide_upto[i]) return false;
    return selected[static_cast<int64_t>(kv_head) * n_partitions * lag + off] == 0;
  }
};

// For each new token i (0 <= i < n_q), attends over cache indices
// [0, ctx_first + i) — the cache before it plus itself, causal — for every
// query head (GQA: query head h reads kv head h / (n_heads / n_kv_heads)),
// leaving out the keys `mask` hides (none when mask is null).
// q: row i at q + i * q_row_stride, [n_heads, head_dim]; out: [n_q, n_heads, head_dim].
void paged_attention(const PagedKv& kv, const int32_t* block_table, int32_t ctx_first,
                     const float* q, int64_t q_row_stride, float* out, int32_t n_q,
                     int32_t n_heads, float scale, ThreadPool* pool,
                     const PartitionMask* mask = nullptr);

// Several sequences' few-query attention (decode) in one parallel loop over
// (sequence, query, KV head), so that small steps of many sequences keep every
// thread busy. Same arguments per item as paged_attention. Every item takes
// the per-query path, whatever its n_q (meant for a few queries each).
struct AttentionItem {
  const int32_t* block_table = nullptr;
  int32_t ctx_first = 0;
  const float* q = nullptr;
  float* out = nullptr;
  int32_t n_q = 0;
  const PartitionMask* mask = nullptr;
};
void paged_attention_batch(const PagedKv& kv, const AttentionItem* items, int32_t n_items,
                           int64_t q_row_stride, int32_t n_heads, float scale, ThreadPool* pool);

// Plain reference: walks the block table one token at a time, in double.
void paged_attention_reference(const PagedKv& kv, const int32_t* block_table, int32_t ctx_first,
                               const float* q, int64_t q_row_stride, float* out, int32_t n_q,
                               int32_t n_heads, float scale, const PartitionMask* mask = nullptr);

}  // namespace lagserve::kernels
