// LagKV scoring of one partition of one KV head, read straight from the paged
// cache (DESIGN.md section 1, "Scoring partition p"), plus its plain reference.
#pragma once

#include <cstdint>

#include "kernels/cpu/paged_attention.h"

namespace lagserve::kernels {

// scores_out[i] (i in [0, L)) = softmax(s_K)[i] + w * softmax(s_V)[i], where
// s_X[i] is the Bessel-corrected std over channels of
// (cur[i, j] - mn_j) / max(mx_j - mn_j, 1e-6), mn/mx the per-channel min/max
// of ref; cur = X at cache indices [cur_begin, cur_begin + L) and ref = X at
// [ref_begin, ref_begin + L) of kv_head (cache index i lives in block
// block_table[i / block_size], slot i % block_size). fp32, lane-ordered sums;
// within 1e-5 relative of the reference for well-conditioned inputs.
// Preconditions: head_dim >= 2, L >= 1, both ranges lie inside the table.
void lag_score_paged(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                     int32_t cur_begin, int32_t ref_begin, int32_t L, float score_v_weight,
                     float* scores_out);

// Plain reference: walks the block table one element at a time, in double.
void lag_score_paged_reference(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                               int32_t cur_begin, int32_t ref_begin, int32_t L,
                               float score_v_weight, float* scores_out);

}  // namespace lagserve::kernels
