// Safetensors writer: fp32 tensors out as F32 or BF16 (round to nearest even),
// in the layout that engine/model/safetensors.h and Hugging Face read.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace lagserve::trainer {

enum class SaveDtype { F32, BF16 };

struct TensorView {
  std::string name;
  std::vector<int64_t> shape;  // PyTorch order: shape.back() is contiguous
  std::span<const float> data;  // product(shape) floats, row-major
};

// fp32 -> bf16 bits, rounding to nearest, ties to even; NaN stays a (quiet)
// NaN of the same sign, overflow past the bf16 range gives +-inf.
uint16_t f32_to_bf16_bits(float value);

// Writes a .safetensors file: an 8-byte little-endian header length, the JSON
// header ({"name": {"dtype", "shape", "data_offsets"}, ..., "__metadata__"}
// when metadata is non-empty) padded with spaces to a multiple of 8 bytes,
// then the tensors' data in the given order. Writes path + ".tmp" and renames
// it over path, so a failure never leaves a half-written file at path.
// Errors (InvalidArgument: empty or duplicate names, a name "__metadata__",
// negative dimensions, shape/data size mismatch; Internal: I/O) name the path
// and the tensor.
absl::Status write_safetensors(const std::string& path, std::span<const TensorView> tensors,
                               SaveDtype dtype,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace lagserve::trainer
