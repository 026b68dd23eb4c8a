// Safetensors reader: maps each file once, parses its JSON header, and checks
// every tensor's dtype, shape and data_offsets against the data section.
//
// Layout: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//  "__metadata__": {...}}, then the data section that offsets point into
// (relative to its start). The tensors must tile the data section exactly.
#include "engine/model/safetensors.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <set>

#include "engine/common/check.h"
#include "engine/common/status_macros.h"
#include "engine/model/fp16.h"
#include "engine/model/mapped_file.h"

namespace lagserve::model {
namespace {

using nlohmann::json;

// Guards the JSON parser against absurd headers; the reference implementation
// uses the same limit.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

int dtype_bytes(StDtype dtype) {
  switch (dtype) {
    case StDtype::F32:
      return 4;
    case StDtype::F16:
      return 2;
    case StDtype::BF16:
      return 2;
  }
  LAGSERVE_CHECK(false, "bad StDtype {}", static_cast<int>(dtype));
  return 0;
}

std::optional<StDtype> parse_dtype(const std::string& name) {
  if (name == "F32") return StDtype::F32;
  if (name == "F16") return StDtype::F16;
  if (name == "BF16") return StDtype::BF16;
  return std::nullopt;
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

absl::Status invalid(std::string_view file, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("{}: {}", file, what));
}

// Parses JSON text, turning parser exceptions into a Status. With
// `reject_duplicate_top_keys`, a key repeated in the top-level object is an
// error (nlohmann would silently keep the last one).
absl::StatusOr<json> parse_json(std::string_view file, std::string_view what, const char* begin,
                                const char* end, bool reject_duplicate_top_keys) {
  std::set<std::string> top_keys;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (reject_duplicate_top_keys && event == json::parse_event_t::key && depth == 1 &&
        !top_keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  try {
    json parsed = json::parse(begin, end, on_event);
    if (!duplicate.empty()) {
      return invalid(file, fmt::format("{} has duplicate key '{}'", what, duplicate));
    }
    if (!parsed.is_object()) return invalid(file, fmt::format("{} is not a JSON object", what));
    return parsed;
  } catch (const json::exception& e) {
    return invalid(file, fmt::format("{} is not valid JSON: {}", what, e.what()));
  }
}

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace

int64_t StTensor::n_elements() const {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

void st_to_f32(const StTensor& t, float* dst) {
  const int64_t n = t.n_elements();
  LAGSERVE_CHECK(t.n_bytes == static_cast<uint64_t>(n) * dtype_bytes(t.dtype),
                 "st_to_f32: tensor '{}' has {} bytes for {} elements", t.name, t.n_bytes, n);
  switch (t.dtype) {
    case StDtype::F32:
      std::memcpy(dst, t.data, t.n_bytes);
      return;
    case StDtype::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        dst[i] = fp16_to_f32(h);
      }
      return;
    case StDtype::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
  }
}

SafetensorsModel::~SafetensorsModel() = default;

const StTensor* SafetensorsModel::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::open_file(
    const std::string& path) {
  auto model = std::unique_ptr<SafetensorsModel>(new SafetensorsModel());
  LAGSERVE_RETURN_IF_ERROR(model->add_file(path));
  return model;
}

absl::StatusOr<std::unique_ptr<SafetensorsModel>> SafetensorsModel::open_dir(
    const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  if (!file_exists(index_path)) {
    if (!file_exists(single_path)) {
      return absl::NotFoundError(fmt::format(
          "{}: neither model.safetensors nor model.safetensors.index.json is there", dir));
    }
    return open_file(single_path);
  }

  // Sharded: the index maps each tensor name to the shard file that holds it.
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> index_file, MappedFile::open(index_path));
  const char* text = reinterpret_cast<const char*>(index_file->data());
  LAGSERVE_ASSIGN_OR_RETURN(
      json index, parse_json(index_path, "the index", text, text + index_file->size(), true));
  auto weight_map = index.find("weight_map");
  if (weight_map == index.end() || !weight_map->is_object()) {
    return invalid(index_path, "has no \"weight_map\" object");
  }
  std::vector<std::string> shards;                          // in order of first mention, each once
  std::vector<std::pair<std::string, std::string>> listed;  // (tensor, shard)
  for (const auto& [name, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      return invalid(index_path, fmt::format("weight_map entry '{}' is not a file name", name));
    }
    const std::string file = shard.get<std::string>();
    // NOTE: shard names are plain file names beside the index; anything that
    // could point elsewhere is refused.
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
      return invalid(index_path, fmt::format("weight_map entry '{}' names shard '{}', which is "
                                             "not a file name in the same directory",
                                             name, file));
    }
    if (std::find(shards.begin(), shards.end(), file) == shards.end()) shards.push_back(file);
    listed.emplace_back(name, file);
  }

  auto model = std::unique_ptr<SafetensorsModel>(new SafetensorsModel());
  std::unordered_map<std::string, std::string> shard_of_tensor;
  for (const std::string& shard : shards) {
    const size_t first = model->tensors_.size();
    absl::Status st = model->add_file(dir + "/" + shard);
    if (!st.ok()) {
      return absl::Status(st.code(), fmt::format("{}: shard '{}' listed in weight_map: {}",
                                                 index_path, shard, std::string(st.message())));
    }
    for (size_t i = first; i < model->tensors_.size(); ++i) {
      shard_of_tensor.emplace(model->tensors_[i].name, shard);
    }
  }
  for (const auto& [name, shard] : listed) {
    auto it = shard_of_tensor.find(name);
    if (it == shard_of_tensor.end() || it->second != shard) {
      return invalid(index_path, fmt::format("weight_map puts tensor '{}' in shard '{}', which "
                                             "does not hold it",
                                             name, shard));
    }
  }
  return model;
}

absl::Status SafetensorsModel::add_file(const std::string& path) {
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::open(path));
  const uint64_t file_bytes = file->size();
  if (file_bytes < 8) {
    return invalid(
        path, fmt::format("truncated: {} bytes, less than the 8-byte header length", file_bytes));
  }
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, file->data(), 8);  // little-endian hosts only (see fp16.h users)
  if (header_bytes > file_bytes - 8) {
    return invalid(path, fmt::format("header length {} runs past the end of the file ({} bytes)",
                                     header_bytes, file_bytes));
  }
  if (header_bytes > kMaxHeaderBytes) {
    return invalid(path, fmt::format("header length {} exceeds the limit of {} bytes", header_bytes,
                                     kMaxHeaderBytes));
  }
  const char* header_text = reinterpret_cast<const char*>(file->data() + 8);
  LAGSERVE_ASSIGN_OR_RETURN(
      json header, parse_json(path, "the header", header_text, header_text + header_bytes, true));

  const uint8_t* data = file->data() + 8 + header_bytes;
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;
  std::vector<StTensor> added;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) per added tensor
  for (const auto& item : header.items()) {
    // NOTE: not a structured binding: clang before 16 (the fuzz build) cannot
    // capture one in the lambda below.
    const std::string& name = item.key();
    const json& entry = item.value();
    if (name == "__metadata__") continue;
    auto fail = [&](std::string_view what) {
      return invalid(path, fmt::format("tensor '{}': {}", name, what));
    };
    if (!entry.is_object()) return fail("header entry is not an object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return fail("no \"dtype\" string");
    if (shape_it == entry.end() || !shape_it->is_array()) return fail("no \"shape\" array");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
      return fail("\"data_offsets\" is not a pair of non-negative integers");
    }

    StTensor t;
    t.name = name;
    const std::string dtype_name = dtype_it->get<std::string>();
    const std::optional<StDtype> dtype = parse_dtype(dtype_name);
    if (!dtype.has_value()) {
      return fail(fmt::format("dtype {} is not supported (supported: F32, F16, BF16)", dtype_name));
    }
    t.dtype = *dtype;
    int64_t n_elements = 1;
    for (const json& dim : *shape_it) {
      if (!dim.is_number_unsigned() ||
          dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return fail(fmt::format("shape {} has an entry that is not a non-negative integer",
                                shape_it->dump()));
      }
      const auto d = static_cast<int64_t>(dim.get<uint64_t>());
      if (__builtin_mul_overflow(n_elements, d, &n_elements)) {
        return fail(fmt::format("shape {} overflows 64 bits", shape_it->dump()));
      }
      t.shape.push_back(d);
    }
    uint64_t expected_bytes = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(n_elements),
                               static_cast<uint64_t>(dtype_bytes(t.dtype)), &expected_bytes)) {
      return fail(fmt::format("shape {} overflows 64 bits", shape_it->dump()));
    }
    const auto begin = (*offsets_it)[0].get<uint64_t>();
    const auto end = (*offsets_it)[1].get<uint64_t>();
    if (begin > end) {
      return fail(fmt::format("data_offsets [{}, {}] begin after they end", begin, end));
    }
    if (end > data_bytes) {
      return fail(fmt::format("data_offsets [{}, {}] run past the data section ({} bytes)", begin,
                              end, data_bytes));
    }
    if (end - begin != expected_bytes) {
      return fail(
          fmt::format("data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {} bytes",
                      begin, end, end - begin, shape_string(t.shape), dtype_name, expected_bytes));
    }
    t.data = data + begin;
    t.n_bytes = expected_bytes;
    ranges.emplace_back(begin, end);
    added.push_back(std::move(t));
  }

  // The tensors must tile the data section: no overlap, no holes, no tail.
  std::vector<size_t> order(added.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  uint64_t covered = 0;
  for (size_t i : order) {
    if (ranges[i].first != covered) {
      return invalid(
          path, fmt::format("tensor '{}': data_offsets [{}, {}] {} the previous tensor, "
                            "which ends at {}",
                            added[i].name, ranges[i].first, ranges[i].second,
                            ranges[i].first < covered ? "overlap" : "leave a hole after", covered));
    }
    covered = ranges[i].second;
  }
  if (covered != data_bytes) {
    return invalid(path, fmt::format("tensors cover {} bytes but the data section has {} bytes",
                                     covered, data_bytes));
  }

  for (const StTensor& t : added) {
    if (index_.count(t.name) != 0) {
      return invalid(path, fmt::format("tensor '{}' is also in an earlier file", t.name));
    }
  }
  for (StTensor& t : added) {
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }
  mappings_.push_back(Mapping{file->data(), file->size()});
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

}  // namespace lagserve::model
