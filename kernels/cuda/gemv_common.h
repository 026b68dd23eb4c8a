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

// The kQkvRope epilogue of one row r and one rotation pair: features f
// (element j = f % head_dim, j < head_dim / 2, of head f / head_dim) and
// f + head_dim / 2, whose scaled sums are x1 and x2. Bias, NeoX RoPE of q and
// k heads, the fp32 row of y, and the bf16 K/V cache write of k and v heads.
__device__ __forceinline__ void gemv_qkv_rope_pair(const GemvOutput& out, int32_t N, int r, int f, float x1,
                                                   float x2) {
  const PagedKvBf16& kv = out.kv;
  const int d = kv.head_dim, half = d / 2, h = f / d, j = f % d, n_kv = kv.n_kv_heads;
  if (out.bias != nullptr) {
    x1 += out.bias[f];
    x2 += out.bias[f + half];
  }
  if (h < out.n_heads + n_kv) {  // q and k rotate; v does not
    float s, c;
    // NOTE: fp32 product and sincosf, as qkv_rope_write.
    sincosf(static_cast<float>(out.positions[r]) * out.inv_freq[j], &s, &c);
    const float r1 = x1 * c - x2 * s, r2 = x2 * c + x1 * s;
    x1 = r1;
    x2 = r2;
  }
  float* y = out.y + static_cast<int64_t>(r) * N;
  y[f] = x1;
  y[f + half] = x2;
  if (h >= out.n_heads) {
    const int64_t slot = out.slots[r], block = slot / kv.block_size, in_block = slot % kv.block_size;
    const bool is_k = h < out.n_heads + n_kv;
    const int kh = is_k ? h - out.n_heads : h - out.n_heads - n_kv;
    bf16* dst = (is_k ? kv.k : kv.v) + ((block * n_kv + kh) * kv.block_size + in_block) * d;
    dst[j] = __float2bfloat16(x1);
    dst[j + half] = __float2bfloat16(x2);
  }
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
