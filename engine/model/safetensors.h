// Safetensors reader: a single model.safetensors or shards listed in
// model.safetensors.index.json, memory-mapped, with the JSON header checked
// against the file (offsets in range, contiguous, sizes matching shape x dtype).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lagserve::model {

class MappedFile;

enum class StDtype { F32, F16, BF16 };

struct StTensor {
  std::string name;
  StDtype dtype = StDtype::F32;
  std::vector<int64_t> shape;  // PyTorch order: shape.back() is contiguous
  const uint8_t* data = nullptr;  // inside the mapping; may be unaligned
  uint64_t n_bytes = 0;

  int64_t n_elements() const;
};

// Converts a tensor to fp32 into dst (dst holds n_elements floats).
void st_to_f32(const StTensor& t, float* dst);

class SafetensorsModel {
 public:
  // `dir` holds model.safetensors or model.safetensors.index.json + shards.
  // Errors name the file and what is wrong (e.g. a header whose offsets lie).
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> open_dir(const std::string& dir);
  // A single .safetensors file.
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> open_file(const std::string& path);
  ~SafetensorsModel();
  SafetensorsModel(const SafetensorsModel&) = delete;
  SafetensorsModel& operator=(const SafetensorsModel&) = delete;

  const std::vector<StTensor>& tensors() const { return tensors_; }
  const StTensor* find(std::string_view name) const;

 private:
  SafetensorsModel() = default;
  struct Mapping {
    const uint8_t* data = nullptr;
    size_t n_bytes = 0;
  };
  absl::Status add_file(const std::string& path);

  std::vector<std::unique_ptr<MappedFile>> files_;  // own what mappings_ view
  std::vector<Mapping> mappings_;
  std::vector<StTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace lagserve::model
