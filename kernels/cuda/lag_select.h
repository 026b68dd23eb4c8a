// LagKV selection on the GPU: per row of L scores, the k highest (ties to the
// lower offset), exactly kv::lag_select (engine/kv/lag_policy.h).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace lagserve::kernels::cuda {

// selected[row * L + i] = 1 when score i of the row is among the k highest
// (ordered by score descending, then offset ascending), else 0.
// scores: [n_rows, L]; selected: [n_rows, L]. Preconditions: 1 <= k <= L, no
// NaN in scores. n_rows <= 0: no-op.
void lag_select(const float* scores, int32_t n_rows, int32_t L, int32_t k, uint8_t* selected,
                cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
