// GGUF reader: parses the header, metadata and tensor directory of a
// memory-mapped GGUF v2/v3 file, bounds-checking every read against the file
// size so that a truncated or hostile file yields a Status, never a crash.
//
// Layout (all little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv,
// n_kv x (string key, u32 value_type, value), n_tensors x (string name,
// u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset), padding to
// general.alignment, then the data section that tensor offsets point into.
#include "engine/model/gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <variant>

#include "engine/common/check.h"
#include "engine/common/status_macros.h"
#include "engine/model/mapped_file.h"

namespace lagserve::model {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxDims = 4;          // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 8;  // deeper nesting is surely hostile
constexpr uint32_t kTypeString = 8;
constexpr uint32_t kTypeArray = 9;
constexpr uint32_t kNumValueTypes = 13;

// gguf_type names, indexed by the on-disk value (== GgufValue variant index).
constexpr std::array<const char*, kNumValueTypes> kValueTypeNames = {
    "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
    "bool",  "string", "array",  "uint64", "int64",  "float64"};

// Fewest bytes one value of a type occupies: fixed size, or the length/count
// prefix of strings and arrays. Bounds array counts before any allocation.
constexpr std::array<uint64_t, kNumValueTypes> kValueMinBytes = {1, 1, 2,  2, 4, 4, 4,
                                                                 1, 8, 12, 8, 8, 8};

std::string value_type_name(uint32_t type) {
  return type < kNumValueTypes ? kValueTypeNames[type] : fmt::format("unknown({})", type);
}

// A cursor over the mapped bytes. Errors describe where the parse was
// (`context`, plus the index path into nested arrays) and what it needed.
class Reader {
 public:
  Reader(const std::string& path, const uint8_t* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }
  void set_context(std::string context) { context_ = std::move(context); }
  std::vector<uint64_t>& element_path() { return element_path_; }

  absl::Status error(std::string_view what) const {
    return absl::InvalidArgumentError(fmt::format("{}: {}", path_, what));
  }
  absl::Status error_here(std::string_view what) const {
    return error(fmt::format("{}{}: {}", context_, element_suffix(), what));
  }
  absl::Status truncated(std::string_view what) const {
    return error(fmt::format("truncated: {}{} {}", context_, element_suffix(), what));
  }

  // Points `*out` at the next n bytes and advances, or fails as truncated.
  absl::Status take(uint64_t n, std::string_view field, const uint8_t** out) {
    if (n > remaining()) {
      return truncated(fmt::format("{} needs {} bytes at byte {} but the file has {} bytes", field,
                                   n, pos_, size_));
    }
    *out = data_ + pos_;
    pos_ += n;
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status read(std::string_view field, T* out) {
    const uint8_t* p = nullptr;
    LAGSERVE_RETURN_IF_ERROR(take(sizeof(T), field, &p));
    std::memcpy(out, p, sizeof(T));
    return absl::OkStatus();
  }

  // A u64 length, then that many bytes. `length_field` names the prefix.
  absl::Status read_string(std::string_view length_field, std::string_view field,
                           std::string* out) {
    uint64_t length = 0;
    LAGSERVE_RETURN_IF_ERROR(read(length_field, &length));
    const uint8_t* p = nullptr;
    LAGSERVE_RETURN_IF_ERROR(take(length, field, &p));
    out->assign(reinterpret_cast<const char*>(p), length);
    return absl::OkStatus();
  }

 private:
  std::string element_suffix() const {
    std::string s;
    for (uint64_t i : element_path_) s += fmt::format("[{}]", i);
    return s;
  }

  const std::string& path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string context_;
  std::vector<uint64_t> element_path_;
};

template <size_t I>
absl::Status read_fixed(Reader& r, GgufValue* out) {
  using T = std::variant_alternative_t<I, decltype(GgufValue::value)>;
  T v{};
  if constexpr (std::is_same_v<T, bool>) {
    uint8_t byte = 0;
    LAGSERVE_RETURN_IF_ERROR(r.read("bool value", &byte));
    if (byte > 1) return r.error_here(fmt::format("bool value is {}, not 0 or 1", byte));
    v = byte != 0;
  } else {
    LAGSERVE_RETURN_IF_ERROR(r.read(kValueTypeNames[I], &v));
  }
  out->value.emplace<I>(v);
  return absl::OkStatus();
}

// Readers of the fixed-size value types, by gguf_type (string, array: null).
using FixedReader = absl::Status (*)(Reader&, GgufValue*);
constexpr std::array<FixedReader, kNumValueTypes> kFixedReaders = {
    read_fixed<0>,  read_fixed<1>,  read_fixed<2>, read_fixed<3>, read_fixed<4>,
    read_fixed<5>,  read_fixed<6>,  read_fixed<7>, nullptr,       nullptr,
    read_fixed<10>, read_fixed<11>, read_fixed<12>};

absl::Status read_value(Reader& r, uint32_t type, int depth, GgufValue* out) {
  if (type >= kNumValueTypes) return r.error_here(fmt::format("unknown value type {}", type));
  if (kFixedReaders[type] != nullptr) return kFixedReaders[type](r, out);
  switch (type) {
    case kTypeString: {
      std::string s;
      LAGSERVE_RETURN_IF_ERROR(r.read_string("string length", "string", &s));
      out->value.emplace<kTypeString>(std::move(s));
      return absl::OkStatus();
    }
    case kTypeArray: {
      if (depth >= kMaxArrayNesting) {
        return r.error_here(fmt::format("arrays nested deeper than {} levels", kMaxArrayNesting));
      }
      GgufValue::Array array;
      LAGSERVE_RETURN_IF_ERROR(r.read("array element type", &array.element_type));
      if (array.element_type >= kNumValueTypes) {
        return r.error_here(fmt::format("array has unknown element type {}", array.element_type));
      }
      uint64_t count = 0;
      LAGSERVE_RETURN_IF_ERROR(r.read("array count", &count));
      const uint64_t min_bytes = kValueMinBytes[array.element_type];
      if (count > r.remaining() / min_bytes) {
        return r.truncated(fmt::format(
            "array of {} {} values needs at least {} bytes per element at byte {} but the file "
            "has {} bytes",
            count, value_type_name(array.element_type), min_bytes, r.pos(), r.size()));
      }
      array.values.resize(count);
      r.element_path().push_back(0);
      for (uint64_t i = 0; i < count; ++i) {
        r.element_path().back() = i;
        LAGSERVE_RETURN_IF_ERROR(read_value(r, array.element_type, depth + 1, &array.values[i]));
      }
      r.element_path().pop_back();
      out->value.emplace<kTypeArray>(std::move(array));
      return absl::OkStatus();
    }
  }
  LAGSERVE_CHECK(false, "unhandled gguf value type {}", type);
  return absl::InternalError("unreachable");
}

const char* value_kind(const GgufValue& v) { return kValueTypeNames[v.value.index()]; }

}  // namespace

// --- GgufValue ----------------------------------------------------------------

std::optional<int64_t> GgufValue::as_int() const {
  return std::visit(
      [](const auto& v) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool> || !std::is_integral_v<T>) {
          return std::nullopt;
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
          return static_cast<int64_t>(v);
        } else {
          return static_cast<int64_t>(v);
        }
      },
      value);
}

std::optional<double> GgufValue::as_double() const {
  return std::visit(
      [](const auto& v) -> std::optional<double> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool> || !std::is_arithmetic_v<T>) {
          return std::nullopt;
        } else {
          return static_cast<double>(v);
        }
      },
      value);
}

const std::string* GgufValue::as_string() const { return std::get_if<std::string>(&value); }
const GgufValue::Array* GgufValue::as_array() const { return std::get_if<Array>(&value); }

int64_t GgufTensorInfo::n_elements() const {
  return std::accumulate(dims.begin(), dims.end(), int64_t{1}, std::multiplies<>());
}

// --- GgufFile -------------------------------------------------------------------

GgufFile::~GgufFile() = default;

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::open(path));
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  file->path_ = path;
  file->map_ = mapped->data();
  file->map_bytes_ = mapped->size();
  file->file_ = std::move(mapped);
  LAGSERVE_RETURN_IF_ERROR(file->parse());
  return file;
}

absl::Status GgufFile::parse() {
  Reader r(path_, map_, map_bytes_);
  if (map_bytes_ == 0) return r.error("truncated: empty file (0 bytes), not a GGUF model");

  // Header.
  r.set_context("header");
  uint32_t magic = 0;
  LAGSERVE_RETURN_IF_ERROR(r.read("magic", &magic));
  if (magic != kGgufMagic) {
    return r.error(fmt::format("bad magic 0x{:08x}: not a GGUF file (expected \"GGUF\")", magic));
  }
  LAGSERVE_RETURN_IF_ERROR(r.read("version", &version_));
  if (version_ == 1) {
    return r.error(
        "GGUF version 1 is not supported (only versions 2 and 3); "
        "re-convert the model with a current llama.cpp");
  }
  if (version_ == 0x02000000 || version_ == 0x03000000) {
    return r.error("big-endian GGUF files are not supported");
  }
  if (version_ != 2 && version_ != 3) {
    return r.error(fmt::format("GGUF version {} is not supported (supported: 2, 3)", version_));
  }
  uint64_t n_tensors = 0;
  uint64_t n_kv = 0;
  LAGSERVE_RETURN_IF_ERROR(r.read("tensor count", &n_tensors));
  LAGSERVE_RETURN_IF_ERROR(r.read("metadata count", &n_kv));
  // A metadata entry takes at least 13 bytes (key length, type, 1-byte value):
  // a count that cannot fit is an error, never an allocation.
  if (n_kv > r.remaining() / 13) {
    return r.error(
        fmt::format("truncated: header claims {} metadata entries but only {} bytes follow", n_kv,
                    r.remaining()));
  }

  // Metadata.
  metadata_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    r.set_context(fmt::format("metadata entry {}", i));
    std::string key;
    LAGSERVE_RETURN_IF_ERROR(r.read_string("key length", "key", &key));
    r.set_context(fmt::format("metadata entry {} ('{}')", i, key));
    if (metadata_index_.count(key) != 0) {
      return r.error(fmt::format("duplicate metadata key '{}' (entries {} and {})", key,
                                 metadata_index_[key], i));
    }
    uint32_t type = 0;
    LAGSERVE_RETURN_IF_ERROR(r.read("value type", &type));
    GgufValue value;
    LAGSERVE_RETURN_IF_ERROR(read_value(r, type, 0, &value));
    metadata_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  uint64_t alignment = kDefaultAlignment;
  if (const GgufValue* v = find("general.alignment")) {
    const std::optional<int64_t> a = v->as_int();
    if (!a.has_value()) {
      return r.error(fmt::format("general.alignment must be an integer, got a {}", value_kind(*v)));
    }
    if (*a <= 0 || (*a & (*a - 1)) != 0 || *a > (1 << 30)) {
      return r.error(fmt::format("general.alignment {} is not a power of two (up to 2^30)", *a));
    }
    alignment = static_cast<uint64_t>(*a);
  }

  // Tensor directory: an entry takes at least 24 bytes (name length, n_dims,
  // type, offset).
  if (n_tensors > r.remaining() / 24) {
    return r.error(
        fmt::format("truncated: header claims {} tensors but only {} bytes follow the metadata",
                    n_tensors, r.remaining()));
  }
  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    r.set_context(fmt::format("tensor directory entry {}", i));
    GgufTensorInfo t;
    LAGSERVE_RETURN_IF_ERROR(r.read_string("name length", "name", &t.name));
    r.set_context(fmt::format("tensor directory entry {} ('{}')", i, t.name));
    if (tensor_index_.count(t.name) != 0) {
      return r.error(fmt::format("duplicate tensor name '{}' (entries {} and {})", t.name,
                                 tensor_index_[t.name], i));
    }
    uint32_t n_dims = 0;
    LAGSERVE_RETURN_IF_ERROR(r.read("n_dims", &n_dims));
    if (n_dims > kMaxDims) {
      return r.error(fmt::format("tensor '{}' has n_dims {}, more than the maximum {}", t.name,
                                 n_dims, kMaxDims));
    }
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      LAGSERVE_RETURN_IF_ERROR(r.read("dims", &dim));
      if (dim == 0 || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return r.error(fmt::format("tensor '{}' has invalid dimension {} = {}", t.name, d, dim));
      }
      if (__builtin_mul_overflow(n_elements, static_cast<int64_t>(dim), &n_elements)) {
        return r.error(fmt::format("tensor '{}': element count overflows 64 bits", t.name));
      }
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    uint32_t type = 0;
    LAGSERVE_RETURN_IF_ERROR(r.read("type", &type));
    t.type = static_cast<GgmlType>(type);
    if (!ggml_type_supported(t.type)) {
      return r.error(fmt::format(
          "tensor '{}' has type {}, which is not supported (supported: F32, F16, BF16, Q8_0, "
          "Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
          t.name, ggml_type_name(t.type)));
    }
    const int64_t block = ggml_block_elements(t.type);
    const int64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % block != 0) {
      return r.error(
          fmt::format("tensor '{}' has row length {}, not a multiple of the {} block size {}",
                      t.name, row, ggml_type_name(t.type), block));
    }
    LAGSERVE_RETURN_IF_ERROR(r.read("offset", &t.offset));
    if (t.offset % alignment != 0) {
      return r.error(fmt::format(
          "tensor '{}' data offset {} is misaligned (not a multiple of the alignment {})", t.name,
          t.offset, alignment));
    }
    absl::StatusOr<uint64_t> n_bytes = ggml_n_bytes(t.type, n_elements);
    if (!n_bytes.ok())
      return r.error(
          fmt::format("tensor '{}': {}", t.name, std::string(n_bytes.status().message())));
    t.n_bytes = *n_bytes;
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the next multiple of the alignment.
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  const uint64_t file_bytes = map_bytes_;
  for (GgufTensorInfo& t : tensors_) {
    uint64_t end = 0;
    if (__builtin_add_overflow(data_start, t.offset, &end) ||
        __builtin_add_overflow(end, t.n_bytes, &end) || end > file_bytes) {
      return r.error(fmt::format(
          "truncated: tensor '{}' data (offset {} + {} bytes from data section at byte {}) "
          "runs past the end of the file ({} bytes)",
          t.name, t.offset, t.n_bytes, data_start, file_bytes));
    }
    t.data = map_ + data_start + t.offset;
  }
  // Tensors must not share bytes.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const GgufTensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& prev = *by_offset[i - 1];
    const GgufTensorInfo& cur = *by_offset[i];
    if (cur.offset < prev.offset + prev.n_bytes) {
      return r.error(
          fmt::format("tensor '{}' (offset {}) overlaps tensor '{}' (offset {}, {} bytes)",
                      cur.name, cur.offset, prev.name, prev.offset, prev.n_bytes));
    }
  }
  return absl::OkStatus();
}

// --- Lookups --------------------------------------------------------------------

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

absl::StatusOr<const GgufValue*> find_or_error(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (v == nullptr) {
    return absl::NotFoundError(fmt::format("{}: metadata key '{}' not found", f.path(), key));
  }
  return v;
}

absl::Status wrong_type(const GgufFile& f, std::string_view key, const GgufValue& v,
                        std::string_view expected) {
  std::string found = value_kind(v);
  if (const auto* a = v.as_array())
    found += fmt::format(" of {}", value_type_name(a->element_type));
  return absl::InvalidArgumentError(
      fmt::format("{}: metadata key '{}' is a {}, expected {}", f.path(), key, found, expected));
}

// Converts every element of an array value with `convert`, which returns an
// optional; fails naming the key if the value is not an array of that kind.
template <typename T, typename Convert>
absl::StatusOr<std::vector<T>> get_array(const GgufFile& f, std::string_view key,
                                         std::string_view expected, Convert convert) {
  LAGSERVE_ASSIGN_OR_RETURN(const GgufValue* v, find_or_error(f, key));
  const GgufValue::Array* array = v->as_array();
  if (array == nullptr) return wrong_type(f, key, *v, expected);
  std::vector<T> out;
  out.reserve(array->values.size());
  for (const GgufValue& e : array->values) {
    auto converted = convert(e);
    if (!converted.has_value()) return wrong_type(f, key, *v, expected);
    out.push_back(std::move(*converted));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> GgufFile::get_string(std::string_view key) const {
  LAGSERVE_ASSIGN_OR_RETURN(const GgufValue* v, find_or_error(*this, key));
  if (const std::string* s = v->as_string()) return *s;
  return wrong_type(*this, key, *v, "a string");
}

absl::StatusOr<int64_t> GgufFile::get_int(std::string_view key) const {
  LAGSERVE_ASSIGN_OR_RETURN(const GgufValue* v, find_or_error(*this, key));
  if (std::optional<int64_t> i = v->as_int()) return *i;
  return wrong_type(*this, key, *v, "an integer that fits int64");
}

absl::StatusOr<double> GgufFile::get_float(std::string_view key) const {
  LAGSERVE_ASSIGN_OR_RETURN(const GgufValue* v, find_or_error(*this, key));
  if (std::optional<double> d = v->as_double()) return *d;
  return wrong_type(*this, key, *v, "a number");
}

absl::StatusOr<bool> GgufFile::get_bool(std::string_view key) const {
  LAGSERVE_ASSIGN_OR_RETURN(const GgufValue* v, find_or_error(*this, key));
  if (const bool* b = std::get_if<bool>(&v->value)) return *b;
  return wrong_type(*this, key, *v, "a bool");
}

absl::StatusOr<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  return get_array<std::string>(*this, key, "an array of strings",
                                [](const GgufValue& e) -> std::optional<std::string> {
                                  if (const std::string* s = e.as_string()) return *s;
                                  return std::nullopt;
                                });
}

absl::StatusOr<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
  return get_array<int64_t>(*this, key, "an array of integers",
                            [](const GgufValue& e) { return e.as_int(); });
}

absl::StatusOr<std::vector<double>> GgufFile::get_float_array(std::string_view key) const {
  return get_array<double>(*this, key, "an array of numbers",
                           [](const GgufValue& e) { return e.as_double(); });
}

}  // namespace lagserve::model
