// The paged KV cache of one layer on the GPU, in bf16, laid out exactly as the
// CPU's (kernels/cpu/paged_attention.h):
//   k, v: [n_blocks, n_kv_heads, block_size, head_dim]
// A sequence's block table lists the blocks holding its cache indices in
// order: index i lives in block_table[i / block_size], slot i % block_size.
#pragma once

#include <cstdint>

#include "kernels/cuda/bf16.h"

namespace lagserve::kernels::cuda {

struct PagedKvBf16 {
  bf16* k = nullptr;
  bf16* v = nullptr;
  int32_t n_kv_heads = 0;
  int32_t block_size = 0;
  int32_t head_dim = 0;

  // Element offset of cache index i of kv_head (its head_dim values follow).
  __host__ __device__ int64_t offset(const int32_t* block_table, int32_t kv_head,
                                     int32_t i) const {
    const int64_t block = block_table[i / block_size];
    return ((block * n_kv_heads + kv_head) * block_size + i % block_size) *
           static_cast<int64_t>(head_dim);
  }
};

}  // namespace lagserve::kernels::cuda
