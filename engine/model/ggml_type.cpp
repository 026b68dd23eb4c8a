// ggml tensor types: names, block geometry, byte sizes, and dequantization to
// fp32 of the float and quantized layouts this engine reads from GGUF files.
//
// NOTE: results are bit-exact with ggml's reference and gguf-py whether or not
// the compiler fuses multiply-adds: an fp16 scale times the small integer
// sub-block scales needs at most 19 significant bits, so every intermediate
// product is exact and each value is rounded once. Keep the operand order.

#include "engine/model/ggml_type.h"

#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <string>

#include "engine/common/check.h"
#include "engine/model/fp16.h"

namespace lagserve::model {
namespace {

static_assert(std::endian::native == std::endian::little,
              "GGUF data is little-endian; big-endian hosts are not supported");

constexpr int kQK = 32;     // elements per block of the *_0 / *_1 types
constexpr int kQK_K = 256;  // elements per K-quant super-block

// Block sizes in bytes, from the ggml block structs.
constexpr int kQ4_0Bytes = 2 + kQK / 2;                       // d, qs
constexpr int kQ4_1Bytes = 2 + 2 + kQK / 2;                   // d, m, qs
constexpr int kQ8_0Bytes = 2 + kQK;                           // d, qs
constexpr int kKScaleBytes = 12;                              // 8 x (6-bit scale, 6-bit min)
constexpr int kQ4_KBytes = 2 + 2 + kKScaleBytes + kQK_K / 2;  // d, dmin, scales, qs
constexpr int kQ5_KBytes = 2 + 2 + kKScaleBytes + kQK_K / 8 + kQK_K / 2;  // + qh
constexpr int kQ6_KBytes = kQK_K / 2 + kQK_K / 4 + kQK_K / 16 + 2;        // ql, qh, scales, d

void dequantize_q4_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kQ4_0Bytes, dst += kQK) {
    const float d = load_fp16(src);
    const uint8_t* qs = src + 2;
    for (int i = 0; i < kQK / 2; ++i) {
      dst[i] = static_cast<float>((qs[i] & 0x0f) - 8) * d;
      dst[i + kQK / 2] = static_cast<float>((qs[i] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kQ4_1Bytes, dst += kQK) {
    const float d = load_fp16(src);
    const float m = load_fp16(src + 2);
    const uint8_t* qs = src + 4;
    for (int i = 0; i < kQK / 2; ++i) {
      dst[i] = static_cast<float>(qs[i] & 0x0f) * d + m;
      dst[i + kQK / 2] = static_cast<float>(qs[i] >> 4) * d + m;
    }
  }
}

void dequantize_q8_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kQ8_0Bytes, dst += kQK) {
    const float d = load_fp16(src);
    const int8_t* qs = reinterpret_cast<const int8_t*>(src + 2);
    for (int i = 0; i < kQK; ++i) dst[i] = static_cast<float>(qs[i]) * d;
  }
}

// The 12 scale bytes of Q4_K/Q5_K pack 8 (scale, min) pairs of 6 bits each:
// bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7;
// bytes 4-7 the same for mins; bytes 8-11 the low 4 bits of scales/mins 4-7.
void unpack_k_scales(const uint8_t* q, uint8_t scale[8], uint8_t min[8]) {
  for (int j = 0; j < 4; ++j) {
    scale[j] = q[j] & 63;
    min[j] = q[j + 4] & 63;
  }
  for (int j = 4; j < 8; ++j) {
    scale[j] = static_cast<uint8_t>((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
    min[j] = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void dequantize_q4_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kQ4_KBytes, dst += kQK_K) {
    const float d = load_fp16(src);
    const float dmin = load_fp16(src + 2);
    uint8_t scale[8], min[8];
    unpack_k_scales(src + 4, scale, min);
    const uint8_t* qs = src + 4 + kKScaleBytes;
    // Four groups of 64: 32 low nibbles (sub-block 2j), 32 high (2j + 1).
    for (int j = 0; j < 4; ++j) {
      const float d_lo = d * static_cast<float>(scale[2 * j]);
      const float m_lo = dmin * static_cast<float>(min[2 * j]);
      const float d_hi = d * static_cast<float>(scale[2 * j + 1]);
      const float m_hi = dmin * static_cast<float>(min[2 * j + 1]);
      const uint8_t* q = qs + 32 * j;
      float* y = dst + 64 * j;
      for (int l = 0; l < 32; ++l) {
        y[l] = d_lo * static_cast<float>(q[l] & 0x0f) - m_lo;
        y[l + 32] = d_hi * static_cast<float>(q[l] >> 4) - m_hi;
      }
    }
  }
}

void dequantize_q5_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kQ5_KBytes, dst += kQK_K) {
    const float d = load_fp16(src);
    const float dmin = load_fp16(src + 2);
    uint8_t scale[8], min[8];
    unpack_k_scales(src + 4, scale, min);
    const uint8_t* qh = src + 4 + kKScaleBytes;  // bit s of qh[l]: 5th bit of sub-block s
    const uint8_t* qs = qh + kQK_K / 8;
    for (int j = 0; j < 4; ++j) {
      const float d_lo = d * static_cast<float>(scale[2 * j]);
      const float m_lo = dmin * static_cast<float>(min[2 * j]);
      const float d_hi = d * static_cast<float>(scale[2 * j + 1]);
      const float m_hi = dmin * static_cast<float>(min[2 * j + 1]);
      const int shift_lo = 2 * j;
      const int shift_hi = 2 * j + 1;
      const uint8_t* q = qs + 32 * j;
      float* y = dst + 64 * j;
      for (int l = 0; l < 32; ++l) {
        const int v_lo = (q[l] & 0x0f) | (((qh[l] >> shift_lo) & 1) << 4);
        const int v_hi = (q[l] >> 4) | (((qh[l] >> shift_hi) & 1) << 4);
        y[l] = d_lo * static_cast<float>(v_lo) - m_lo;
        y[l + 32] = d_hi * static_cast<float>(v_hi) - m_hi;
      }
    }
  }
}

void dequantize_q6_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += kQ6_KBytes, dst += kQK_K) {
    const uint8_t* ql_all = src;              // low 4 bits, [128]
    const uint8_t* qh_all = src + kQK_K / 2;  // high 2 bits, [64]
    const int8_t* sc_all = reinterpret_cast<const int8_t*>(src + kQK_K / 2 + kQK_K / 4);  // [16]
    const float d = load_fp16(src + kQK_K / 2 + kQK_K / 4 + kQK_K / 16);
    // Two halves of 128; within a half, l in [0, 32) feeds four outputs.
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = ql_all + 64 * half;
      const uint8_t* qh = qh_all + 32 * half;
      const int8_t* sc = sc_all + 8 * half;
      float* y = dst + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace

std::string_view ggml_type_name(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
      return "F32";
    case GgmlType::F16:
      return "F16";
    case GgmlType::Q4_0:
      return "Q4_0";
    case GgmlType::Q4_1:
      return "Q4_1";
    case GgmlType::Q5_0:
      return "Q5_0";
    case GgmlType::Q5_1:
      return "Q5_1";
    case GgmlType::Q8_0:
      return "Q8_0";
    case GgmlType::Q8_1:
      return "Q8_1";
    case GgmlType::Q2_K:
      return "Q2_K";
    case GgmlType::Q3_K:
      return "Q3_K";
    case GgmlType::Q4_K:
      return "Q4_K";
    case GgmlType::Q5_K:
      return "Q5_K";
    case GgmlType::Q6_K:
      return "Q6_K";
    case GgmlType::Q8_K:
      return "Q8_K";
    case GgmlType::BF16:
      return "BF16";
  }
  // NOTE: the returned view must stay valid, so names of unknown values are
  // interned (one string per distinct value ever asked for; map nodes never move).
  static std::mutex mutex;
  static auto* unknown_names = new std::map<uint32_t, std::string>();
  const auto value = static_cast<uint32_t>(type);
  std::lock_guard<std::mutex> lock(mutex);
  auto [it, inserted] = unknown_names->try_emplace(value);
  if (inserted) it->second = fmt::format("unknown({})", value);
  return it->second;
}

bool ggml_type_supported(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

int64_t ggml_block_elements(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
      return 1;
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
      return kQK;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return kQK_K;
    default:
      break;
  }
  LAGSERVE_CHECK(false, "ggml_block_elements: unsupported type {}", ggml_type_name(type));
  return 0;
}

int64_t ggml_block_bytes(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
      return 4;
    case GgmlType::F16:
      return 2;
    case GgmlType::BF16:
      return 2;
    case GgmlType::Q8_0:
      return kQ8_0Bytes;
    case GgmlType::Q4_0:
      return kQ4_0Bytes;
    case GgmlType::Q4_1:
      return kQ4_1Bytes;
    case GgmlType::Q4_K:
      return kQ4_KBytes;
    case GgmlType::Q5_K:
      return kQ5_KBytes;
    case GgmlType::Q6_K:
      return kQ6_KBytes;
    default:
      break;
  }
  LAGSERVE_CHECK(false, "ggml_block_bytes: unsupported type {}", ggml_type_name(type));
  return 0;
}

absl::StatusOr<uint64_t> ggml_n_bytes(GgmlType type, int64_t n_elements) {
  if (!ggml_type_supported(type)) {
    return absl::InvalidArgumentError(
        fmt::format("ggml type {} is not supported", ggml_type_name(type)));
  }
  if (n_elements < 0) {
    return absl::InvalidArgumentError(
        fmt::format("negative element count {} for type {}", n_elements, ggml_type_name(type)));
  }
  const int64_t block_elements = ggml_block_elements(type);
  if (n_elements % block_elements != 0) {
    return absl::InvalidArgumentError(
        fmt::format("{} elements is not a multiple of the {} block size {}", n_elements,
                    ggml_type_name(type), block_elements));
  }
  // F32 n_elements * 4 can exceed 64 bits; compute in 128.
  const unsigned __int128 n_bytes = static_cast<unsigned __int128>(n_elements / block_elements) *
                                    static_cast<unsigned __int128>(ggml_block_bytes(type));
  if (n_bytes > std::numeric_limits<uint64_t>::max()) {
    return absl::InvalidArgumentError(
        fmt::format("{} elements of {} overflow 64 bits", n_elements, ggml_type_name(type)));
  }
  return static_cast<uint64_t>(n_bytes);
}

void ggml_dequantize(GgmlType type, const void* src, float* dst, int64_t n_elements) {
  LAGSERVE_CHECK(ggml_type_supported(type), "ggml_dequantize: unsupported type {}",
                 ggml_type_name(type));
  LAGSERVE_CHECK(n_elements >= 0 && n_elements % ggml_block_elements(type) == 0,
                 "ggml_dequantize: {} elements is not a whole number of {} blocks", n_elements,
                 ggml_type_name(type));
  const auto* bytes = static_cast<const uint8_t*>(src);
  const int64_t n_blocks = n_elements / ggml_block_elements(type);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, bytes, static_cast<size_t>(n_elements) * sizeof(float));
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n_elements; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = fp16_to_f32(h);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n_elements; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case GgmlType::Q8_0:
      dequantize_q8_0(bytes, dst, n_blocks);
      return;
    case GgmlType::Q4_0:
      dequantize_q4_0(bytes, dst, n_blocks);
      return;
    case GgmlType::Q4_1:
      dequantize_q4_1(bytes, dst, n_blocks);
      return;
    case GgmlType::Q4_K:
      dequantize_q4_k(bytes, dst, n_blocks);
      return;
    case GgmlType::Q5_K:
      dequantize_q5_k(bytes, dst, n_blocks);
      return;
    case GgmlType::Q6_K:
      dequantize_q6_k(bytes, dst, n_blocks);
      return;
    default:
      break;
  }
  LAGSERVE_CHECK(false, "ggml_dequantize: unreachable type {}", ggml_type_name(type));
}

}  // namespace lagserve::model
