// write_safetensors: validates the tensors, builds the JSON header and streams
// the data (converting to BF16 in chunks) into path.tmp, then renames it.
#include "trainer/export/safetensors_writer.h"

#include <algorithm>
#include <bit>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "engine/common/status_macros.h"
#include "trainer/export/file_io.h"

namespace lagserve::trainer {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this writer copies host floats as they are");

constexpr size_t kChunkElements = size_t{1} << 16;  // bf16 conversion buffer

absl::Status invalid(const std::string& path, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", path, what));
}

absl::Status write_data(AtomicFileWriter& out, std::span<const float> data, SaveDtype dtype) {
  if (dtype == SaveDtype::F32) return out.write(data.data(), data.size_bytes());
  std::vector<uint16_t> chunk(std::min(kChunkElements, data.size()));
  for (size_t begin = 0; begin < data.size(); begin += kChunkElements) {
    const size_t n = std::min(kChunkElements, data.size() - begin);
    for (size_t i = 0; i < n; ++i) chunk[i] = f32_to_bf16_bits(data[begin + i]);
    LAGSERVE_RETURN_IF_ERROR(out.write(chunk.data(), n * sizeof(uint16_t)));
  }
  return absl::OkStatus();
}

}  // namespace

uint16_t f32_to_bf16_bits(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // keep NaN a NaN, quiet
  }
  // Adding 0x7fff rounds up past the halfway point; the low bit of the kept
  // part turns an exact tie into round-to-even.
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

absl::Status write_safetensors(const std::string& path, std::span<const TensorView> tensors,
                               SaveDtype dtype,
                               const std::map<std::string, std::string>& metadata) {
  const uint64_t elem_bytes = dtype == SaveDtype::F32 ? 4 : 2;
  const char* dtype_name = dtype == SaveDtype::F32 ? "F32" : "BF16";

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  for (const TensorView& t : tensors) {
    if (t.name.empty()) return invalid(path, "a tensor has an empty name");
    if (t.name == "__metadata__") return invalid(path, "a tensor may not be named __metadata__");
    if (!names.insert(t.name).second) {
      return invalid(path, fmt::format("duplicate tensor name '{}'", t.name));
    }
    uint64_t n_elements = 1;
    for (int64_t dim : t.shape) {
      if (dim < 0) {
        return invalid(path, fmt::format("tensor '{}': shape [{}] has a negative dimension",
                                         t.name, fmt::join(t.shape, ", ")));
      }
      if (__builtin_mul_overflow(n_elements, static_cast<uint64_t>(dim), &n_elements)) {
        return invalid(path, fmt::format("tensor '{}': shape [{}] overflows 64 bits", t.name,
                                         fmt::join(t.shape, ", ")));
      }
    }
    if (n_elements != t.data.size()) {
      return invalid(path, fmt::format("tensor '{}': shape [{}] has {} elements but the data "
                                       "has {}",
                                       t.name, fmt::join(t.shape, ", "), n_elements,
                                       t.data.size()));
    }
    const uint64_t end = offset + n_elements * elem_bytes;
    header[t.name] = {{"dtype", dtype_name}, {"shape", t.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // a name or value that is not UTF-8
    return invalid(path, fmt::format("cannot write the header: {}", e.what()));
  }
  // NOTE: padding the header to a multiple of 8 bytes aligns every tensor's
  // data to 8 bytes in the file, which readers that map it rely on.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  LAGSERVE_ASSIGN_OR_RETURN(AtomicFileWriter out, AtomicFileWriter::open(path));
  uint8_t length_le[8];
  const uint64_t header_bytes = header_text.size();
  for (int i = 0; i < 8; ++i) length_le[i] = static_cast<uint8_t>(header_bytes >> (8 * i));
  LAGSERVE_RETURN_IF_ERROR(out.write(length_le, sizeof(length_le)));
  LAGSERVE_RETURN_IF_ERROR(out.write(header_text.data(), header_text.size()));
  for (const TensorView& t : tensors) LAGSERVE_RETURN_IF_ERROR(write_data(out, t.data, dtype));
  return out.commit();
}

}  // namespace lagserve::trainer
