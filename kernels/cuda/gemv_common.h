// Internal to the skinny GEMMs (gemv.cu, gemv_stream.cu): what both kernels
// share.
#pragma once

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/gemv.h"

namespace lagserve::kernels::cuda {

// Weights: read once, so they bypass L1.
// NOTE: volatile, or the compiler takes the asm for a pure function of its
// address and hoists conditional loads (a slice's tail) out of their branch,
// reading past the end of the weights.
__device__ __forceinline__ uint4 ldw16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Calls go(std::integral_constant<bool, norm>, std::integral_constant<GemvEpilogue, e>)
// for the input kind and epilogue of a launch, so that each picks its kernel
// instance at compile time.
template <typename Go>
void gemv_dispatch(const GemvInput& in, const GemvOutput& out, Go&& go) {
  auto with_norm = [&](auto norm) {
    using E = GemvEpilogue;
    switch (out.epilogue) {
      case E::kStore: go(norm, std::integral_constant<E, E::kStore>{}); break;
      case E::kAdd: go(norm, std::integral_constant<E, E::kAdd>{}); break;
      case E::kSwiglu: go(norm, std::integral_constant<E, E::kSwiglu>{}); break;
      case E::kQkvRope: go(norm, std::integral_constant<E, E::kQkvRope>{}); break;
    }
  };
  if (in.x_norm != nullptr) {
    with_norm(std::true_type{});
  } else {
    with_norm(std::false_type{});
  }
}

// The arguments of rows r0.. of a product, every per-row pointer moved to row r0.

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
