// LagKV scoring on the GPU (DESIGN.md section 1, "Scoring partition p"): the
// due partitions of a batch of sequences in one layer, every KV head, read
// straight from the bf16 paged cache and scored in fp32, in one launch.
// Reference: kernels/cpu/lag_score.h (lag_score_paged_reference).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/lag_work.h"
#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

// For each entry W = works[e] (e < n_works) with W.n_due > 0, L = W.lag, each
// kv head h and due partition r < W.n_due: cur = cache indices
// [W.region + r*L, W.region + (r+1)*L) of the table at tables + W.table_offset,
// ref = the next L indices, and
//   scores[W.score_offset + (h * W.n_due + r) * L + i]
//       = softmax(s_K)[i] + W.v_weight * softmax(s_V)[i]
// with s_X[i] the Bessel-corrected std over channels of
// (cur[i, j] - mn_j) / max(mx_j - mn_j, 1e-6), mn/mx per channel over ref.
// fp32 throughout (K and V converted from bf16). Nothing else of scores is written.
// max_due, max_lag: at least the largest n_due and lag of the entries with
// n_due > 0 (they size the grid and the shared memory; entries with less work
// cost blocks that return at once).
// Preconditions: head_dim even, 2 <= head_dim <= 512; 1 <= max_lag <= 2048;
// n_works <= 65535; per entry with n_due > 0: n_due <= max_due,
// 1 <= L <= max_lag (a kernel that finds one broken prints it and traps),
// [region, region + (n_due + 1) * L) lies inside its table, and its scores do
// not overlap another entry's. works, tables, scores: device memory.
// n_works <= 0 or max_due <= 0: no-op.
void lag_score(const PagedKvBf16& kv, const int32_t* tables, const LagWork* works, int32_t n_works,
               int32_t max_due, int32_t max_lag, float* scores, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
