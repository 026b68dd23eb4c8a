// IEEE half (fp16) and bfloat16 <-> fp32 conversions, exact and branch-light
// so that dequantization loops vectorize.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace lagserve::model {

// fp16 -> fp32, exact for every input (subnormals, inf, NaN payloads kept).
inline float fp16_to_f32(uint16_t h) {
  // NOTE: move the exponent/mantissa into fp32 position and rebias; the two
  // special cases fix up inf/NaN (exponent 31) and subnormals (exponent 0),
  // the latter by letting the FPU normalize through one exact subtraction.
  constexpr uint32_t kExpMask = 0x7c00u << 13;  // fp16 exponent, fp32 position
  uint32_t bits = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = bits & kExpMask;
  bits += (127u - 15u) << 23;
  if (exp == kExpMask) {
    bits += (128u - 16u) << 23;  // inf / NaN: exponent all ones
  } else if (exp == 0) {
    bits += 1u << 23;  // subnormal: value = (bits as float) - 2^-14
    bits = std::bit_cast<uint32_t>(std::bit_cast<float>(bits) - std::bit_cast<float>(113u << 23));
  }
  bits |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
  return std::bit_cast<float>(bits);
}

// fp32 -> fp16 with round-to-nearest-even; overflow gives inf, NaN stays NaN.
inline uint16_t f32_to_fp16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or NaN
    return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65536: inf
  if (ax < 0x38800000u) {                        // below 2^-14: subnormal or 0
    // Adding 0.5 (2^-1) makes the FPU round the value to a multiple of 2^-24
    // with round-to-nearest-even; the low mantissa bits are the fp16 bits.
    const float r = std::bit_cast<float>(ax) + 0.5f;
    return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(r) - 0x3f000000u);
  }
  // Normal: rebias the exponent and round the 13 dropped bits to nearest even.
  const uint32_t odd = (ax >> 13) & 1u;
  const uint32_t rounded = ax + 0xfffu + odd - ((127u - 15u) << 23);
  return sign | static_cast<uint16_t>(rounded >> 13);
}

// bf16 -> fp32: the upper half of an fp32.
inline float bf16_to_f32(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

// fp32 -> bf16 with round-to-nearest-even; NaN stays a quiet NaN.
inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x40u);
  }
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Reads a little-endian fp16 at an arbitrary (possibly unaligned) address.
inline float load_fp16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
  return fp16_to_f32(h);
}

}  // namespace lagserve::model
