// Paged prefill attention on the GPU: the new tokens of one sequence attend,
// causally, over its bf16 KV cache (their own K/V already written), with the
// LagKV partition mask. A tensor-core flash attention (mma.sync, bf16 in,
// fp32 accumulate, online softmax); same semantics as kernels/cpu paged_attention.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

// LagKV partition mask, as kernels::PartitionMask but with device pointers.
// Key j is hidden from query i (kv head h) when off = j - begin lies in
// [0, n_partitions * lag), off / lag <= hide_upto[i], and
// selected[h * n_partitions * lag + off] == 0.
struct PartitionMaskGpu {
  int32_t begin = 0;
  int32_t n_partitions = 0;
  int32_t lag = 0;
  const uint8_t* selected = nullptr;   // device, [n_kv_heads, n_partitions * lag]
  const int32_t* hide_upto = nullptr;  // device, [n_q]; -1: the query sees the whole region
};

// For each new token i (0 <= i < n_q) and query head h (GQA: kv head
// h / (n_heads / n_kv_heads)), attends over cache indices [0, ctx_first + i)
// (causal; the new tokens' K/V are already in the cache), leaving out the keys
// `mask` hides (mask may be null; it is a host pointer to a struct of device
// pointers). block_table, q and out are device pointers.
// q: fp32, row i at q + i * q_row_stride, [n_heads, head_dim] (rounded to bf16
// inside); out: bf16, [n_q, n_heads * head_dim] dense.
// Preconditions: head_dim 64 or 128; block_size a multiple of 16; ctx_first >= 1;
// n_heads a multiple of n_kv_heads; kv.k, kv.v and out 16-byte aligned.
void prefill_attention(const PagedKvBf16& kv, const int32_t* block_table, int32_t ctx_first,
                       const float* q, int64_t q_row_stride, bf16* out, int32_t n_q,
                       int32_t n_heads, float scale, const PartitionMaskGpu* mask,
                       cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
