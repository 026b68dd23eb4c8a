// LagKV selection on the GPU: per row of L scores, the k highest (ties to the
// lower offset), exactly kv::lag_select (engine/kv/lag_policy.h), for the due
// partitions of a batch of sequences in one layer, in one launch.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/lag_work.h"

namespace lagserve::kernels::cuda {

// For each entry W = works[e] (e < n_works) with W.n_due > 0, L = W.lag,
// k = W.keep, and each of its rows (h * W.n_due + r, h < n_kv_heads,
// r < W.n_due) of scores + W.score_offset, [n_kv_heads, n_due, L]:
// selected[W.sel_offset + row * L + i] = 1 when score i of the row is among
// the k highest (ordered by score descending, then offset ascending), else 0.
// Nothing else of selected is written.
// max_due, max_lag: at least the largest n_due and lag of the entries with
// n_due > 0 (they size the grid and the shared memory).
// Preconditions: max_lag >= 1; n_works <= 65535; n_kv_heads <= 65535; per
// entry with n_due > 0: n_due <= max_due, 1 <= k <= L <= max_lag (a kernel
// that finds one broken prints it and traps), no NaN in its scores, its flags
// do not overlap another entry's. works, scores, selected: device memory.
// n_works <= 0, n_kv_heads <= 0 or max_due <= 0: no-op.
void lag_select(const float* scores, const LagWork* works, int32_t n_works, int32_t n_kv_heads,
                int32_t max_due, int32_t max_lag, uint8_t* selected, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
