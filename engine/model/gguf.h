// GGUF reader (versions 2 and 3): memory-maps the file, parses all metadata
// value types and the tensor directory, and validates every offset and size
// against the file before anything is handed out.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/ggml_type.h"

namespace lagserve::model {

class MappedFile;

// One metadata value. Arrays hold values of one element type (nested arrays
// are allowed by the format and kept as such).
struct GgufValue {
  struct Array {
    uint32_t element_type = 0;  // gguf_type of the elements
    std::vector<GgufValue> values;
  };
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float,
               bool, std::string, Array, uint64_t, int64_t, double>
      value;

  // Integer of any width/sign that fits int64 (bool excluded).
  std::optional<int64_t> as_int() const;
  // Any float or integer type as double.
  std::optional<double> as_double() const;
  const std::string* as_string() const;
  const Array* as_array() const;
};

struct GgufTensorInfo {
  std::string name;
  // ggml order: dims[0] is the contiguous (fastest) dimension, i.e. the row
  // length. A [rows, cols] PyTorch weight is stored as dims = {cols, rows}.
  std::vector<int64_t> dims;
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;   // from the start of the data section
  uint64_t n_bytes = 0;  // validated to lie inside the file
  const uint8_t* data = nullptr;

  int64_t n_elements() const;
};

class GgufFile {
 public:
  // Opens and validates `path`. Every failure (missing file, bad magic,
  // unsupported version, truncation, offsets past the end, unsupported or
  // unknown tensor type, misaligned data) is an InvalidArgument/NotFound
  // status whose message names the file and what is wrong.
  static absl::StatusOr<std::unique_ptr<GgufFile>> open(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }

  // Metadata, in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const {
    return metadata_;
  }
  const GgufValue* find(std::string_view key) const;

  // Typed getters: NotFound if missing, InvalidArgument if of another type.
  // get_int takes any integer type whose value fits int64 (not bool);
  // get_float takes any float or integer type; the array getters likewise
  // per element.
  absl::StatusOr<std::string> get_string(std::string_view key) const;
  absl::StatusOr<int64_t> get_int(std::string_view key) const;
  absl::StatusOr<double> get_float(std::string_view key) const;
  absl::StatusOr<bool> get_bool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> get_string_array(std::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> get_int_array(std::string_view key) const;
  absl::StatusOr<std::vector<double>> get_float_array(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  // Fills everything below from the mapping; called once by open().
  absl::Status parse();

  std::unique_ptr<MappedFile> file_;  // owns the mapping that map_ views
  std::string path_;
  uint32_t version_ = 0;
  const uint8_t* map_ = nullptr;
  size_t map_bytes_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace lagserve::model
