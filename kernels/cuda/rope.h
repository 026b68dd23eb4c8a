// Bias, NeoX RoPE and the K/V cache write of a step's qkv rows, fused.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

// On each row of qkv ([n_rows, (n_heads + 2 * n_kv_heads) * head_dim], fp32,
// q | k | v): adds bias (when not null, fp32 [row width]), rotates q and k
// with NeoX RoPE at positions[r] (inv_freq: fp32 [head_dim / 2]), and writes
// k and v as bf16 into the paged cache at slot[r] (block * block_size + slot
// in block, as cache index i of a table maps to table[i / bs] * bs + i % bs).
void qkv_rope_write(float* qkv, const float* bias, const int32_t* positions, const float* inv_freq,
                    const int32_t* slots, const PagedKvBf16& kv, int64_t n_rows, int32_t n_heads,
                    cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
