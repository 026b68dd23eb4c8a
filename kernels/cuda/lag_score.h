// LagKV scoring on the GPU (DESIGN.md section 1, "Scoring partition p"): the
// due partitions of one sequence's layer, every KV head, read straight from
// the bf16 paged cache and scored in fp32. Reference:
// kernels/cpu/lag_score.h (lag_score_paged_reference).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

// For each kv head h and due partition r: cur = cache indices
// [region + r*L, region + (r+1)*L), ref = the next L indices, and
//   scores[(h * n_due + r) * L + i] = softmax(s_K)[i] + w * softmax(s_V)[i]
// with s_X[i] the Bessel-corrected std over channels of
// (cur[i, j] - mn_j) / max(mx_j - mn_j, 1e-6), mn/mx per channel over ref.
// fp32 throughout (K and V converted from bf16); scores: [n_kv_heads, n_due, L].
// Preconditions: head_dim even, 2 <= head_dim <= 512; 1 <= L <= 4096;
// [region, region + (n_due + 1) * L) lies inside block_table. n_due <= 0: no-op.
void lag_score(const PagedKvBf16& kv, const int32_t* block_table, int32_t region, int32_t n_due,
               int32_t L, float w, float* scores, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
