// ggml tensor types as stored in GGUF files, their block geometry, and
// dequantization to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lagserve::model {

// Values are the on-disk enum of ggml (ggml.h: enum ggml_type).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
};

// Name of a type ("Q4_K"), or "unknown(N)".
std::string_view ggml_type_name(GgmlType type);

// Whether this build can dequantize the type (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q4_K, Q5_K, Q6_K).
bool ggml_type_supported(GgmlType type);

// Elements per block and bytes per block (1 and sizeof(element) for float
// types). Precondition: ggml_type_supported(type).
int64_t ggml_block_elements(GgmlType type);
int64_t ggml_block_bytes(GgmlType type);

// Bytes that n_elements of this type occupy. Error if the type is not
// supported or n_elements is not a multiple of the block size.
absl::StatusOr<uint64_t> ggml_n_bytes(GgmlType type, int64_t n_elements);

// Dequantizes n_elements values starting at `src` into `dst`.
// Preconditions: ggml_type_supported(type), n_elements a multiple of
// ggml_block_elements(type), src holds ggml_n_bytes(type, n_elements) bytes.
void ggml_dequantize(GgmlType type, const void* src, float* dst,
                     int64_t n_elements);

}  // namespace lagserve::model
