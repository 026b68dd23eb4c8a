// Rotary position embedding, NeoX style (channel i pairs with i + head_dim/2),
// applied in place to the heads of each row.
#pragma once

#include <cstdint>

namespace lagserve::kernels {

// x: n_rows rows, row r starting at x + r * row_stride and holding n_heads
// heads of head_dim values; positions: [n_rows]; inv_freq: [head_dim / 2].
void rope_neox(float* x, int64_t n_rows, int64_t row_stride, int32_t n_heads, int32_t head_dim,
               const int32_t* positions, const float* inv_freq);

}  // namespace lagserve::kernels
