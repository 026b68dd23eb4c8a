// Internal to the skinny GEMMs (gemv.cu, gemv_stream.cu): the arguments of
// rows r0.. of a product, every per-row pointer moved to row r0.
#pragma once

#include <cstdint>

#include "kernels/cuda/gemv.h"

namespace lagserve::kernels::cuda {

inline GemvInput gemv_input_from(const GemvInput& in, int64_t r0, int64_t K) {
  GemvInput a = in;
  if (in.rows != nullptr) {
    a.rows = in.rows + r0;
  } else if (in.x != nullptr) {
    a.x = in.x + r0 * K;
  } else {
    a.x_norm = in.x_norm + r0 * K;
  }
  return a;
}

inline GemvOutput gemv_output_from(const GemvOutput& out, int64_t r0, int64_t N) {
  GemvOutput a = out;
  switch (out.epilogue) {
    case GemvEpilogue::kStore:
    case GemvEpilogue::kAdd:
      if (out.rows != nullptr) {
        a.rows = out.rows + r0;
      } else {
        a.y = out.y + r0 * out.y_ld;
      }
      break;
    case GemvEpilogue::kSwiglu: a.act = out.act + r0 * (N / 2); break;
    case GemvEpilogue::kQkvRope:
      a.y = out.y + r0 * N;
      a.positions = out.positions + r0;
      a.slots = out.slots + r0;
      break;
  }
  return a;
}

}  // namespace lagserve::kernels::cuda
