// The tensor-core partial kernel of decode_attention (internal): unmasked
// items, head_dim 64 or 128, block_size a multiple of 16, up to 8 query heads
// per KV head. Writes what the scalar partial kernel writes (the output of
// single-split items, the split workspace of the others); decode_attention
// then runs the same merge.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/decode_attention.h"

namespace lagserve::kernels::cuda::detail {

bool decode_tc_supported(const PagedKvBf16& kv, int32_t group);

void decode_partial_tc(const PagedKvBf16& kv, const int32_t* tables, const DecodeItem* items,
                       int32_t n_items, const DecodePlan& plan, const float* q,
                       int64_t q_row_stride, bf16* out, int64_t out_row_stride, int32_t n_heads,
                       float scale_log2, float* ws_acc, float* ws_ml, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda::detail
