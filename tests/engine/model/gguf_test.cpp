// Tests the GGUF reader on files written here by a small GGUF writer: round
// trips (v2, v3, every metadata type, nested arrays, F32/F16/Q8_0 tensors),
// every prefix of a file, random corruption, and each kind of bad input.
// The default model is checked too when it is in the cache. Run: ctest -R Gguf
#include "engine/model/gguf.h"

#include <algorithm>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "engine/model/fp16.h"

namespace lagserve::model {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;

// --- A GGUF writer for tests ------------------------------------------------

template <typename T>
void put(Bytes& out, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}
void put_str(Bytes& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// Serializes a value's payload (its type is the variant index).
void put_value(Bytes& out, const GgufValue& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          put_str(out, x);
        } else if constexpr (std::is_same_v<T, GgufValue::Array>) {
          put<uint32_t>(out, x.element_type);
          put<uint64_t>(out, x.values.size());
          for (const GgufValue& e : x.values) put_value(out, e);
        } else if constexpr (std::is_same_v<T, bool>) {
          put<uint8_t>(out, x ? 1 : 0);
        } else {
          put<T>(out, x);
        }
      },
      v.value);
}

template <typename T>
GgufValue val(T x) {
  GgufValue v;
  v.value = std::move(x);
  return v;
}
GgufValue arr(uint32_t element_type, std::vector<GgufValue> values) {
  return val(GgufValue::Array{element_type, std::move(values)});
}

struct TestTensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type = 0;
  Bytes data;
  std::optional<uint64_t> offset;  // default: next aligned position
};

struct GgufSpec {
  uint32_t version = 3;
  uint64_t alignment = 32;  // used for layout; write general.alignment to change the reader's
  std::vector<std::pair<std::string, Bytes>> kvs;  // key, (u32 type + payload)
  std::vector<TestTensor> tensors;

  void kv(const std::string& key, const GgufValue& v) {
    Bytes b;
    put<uint32_t>(b, static_cast<uint32_t>(v.value.index()));
    put_value(b, v);
    kvs.emplace_back(key, std::move(b));
  }
  void kv_raw(const std::string& key, uint32_t type, const Bytes& payload) {
    Bytes b;
    put<uint32_t>(b, type);
    b.insert(b.end(), payload.begin(), payload.end());
    kvs.emplace_back(key, std::move(b));
  }

  Bytes build() const {
    Bytes out;
    put<uint32_t>(out, 0x46554747);
    put<uint32_t>(out, version);
    put<uint64_t>(out, tensors.size());
    put<uint64_t>(out, kvs.size());
    for (const auto& [key, payload] : kvs) {
      put_str(out, key);
      out.insert(out.end(), payload.begin(), payload.end());
    }
    uint64_t next = 0;
    std::vector<uint64_t> offsets;
    for (const TestTensor& t : tensors) {
      offsets.push_back(t.offset.value_or(next));
      next = (offsets.back() + t.data.size() + alignment - 1) / alignment * alignment;
      put_str(out, t.name);
      put<uint32_t>(out, t.dims.size());
      for (uint64_t d : t.dims) put<uint64_t>(out, d);
      put<uint32_t>(out, t.type);
      put<uint64_t>(out, offsets.back());
    }
    out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
    const size_t data_start = out.size();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const size_t end = data_start + offsets[i] + tensors[i].data.size();
      if (out.size() < end) out.resize(end, 0);
      std::memcpy(out.data() + data_start + offsets[i], tensors[i].data.data(),
                  tensors[i].data.size());
    }
    return out;
  }
};

// --- Test data ----------------------------------------------------------------

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
Bytes f16_bytes(const std::vector<float>& v) {
  Bytes b;
  for (float f : v) put<uint16_t>(b, f32_to_fp16(f));
  return b;
}
// Q8_0 blocks with scale 0.5 and quants q[i] = i - 16 (block b adds b).
Bytes q8_0_bytes(int n_blocks) {
  Bytes b;
  for (int blk = 0; blk < n_blocks; ++blk) {
    put<uint16_t>(b, f32_to_fp16(0.5f));
    for (int i = 0; i < 32; ++i) put<int8_t>(b, static_cast<int8_t>(i - 16 + blk));
  }
  return b;
}

const std::vector<float> kF32Values = {1.5f, -2.0f, 3.25f, 0.0f,  1e-3f, -7.0f,
                                       8.0f, 9.5f,  10.f,  -11.f, 12.f,  13.f};
const std::vector<float> kF16Values = {0.5f, -1.0f, 2.0f, 65504.f, -0.25f, 3.0f, 0.0f, 1.0f};

GgufSpec valid_spec(uint32_t version) {
  GgufSpec s;
  s.version = version;
  s.kv("general.architecture", val(std::string("llama")));
  s.kv("test.u8", val(uint8_t{200}));
  s.kv("test.i8", val(int8_t{-100}));
  s.kv("test.u16", val(uint16_t{60000}));
  s.kv("test.i16", val(int16_t{-30000}));
  s.kv("test.u32", val(uint32_t{4000000000u}));
  s.kv("test.i32", val(int32_t{-2000000000}));
  s.kv("test.f32", val(1.25f));
  s.kv("test.bool", val(true));
  s.kv("test.u64", val(uint64_t{18000000000000000000ull}));
  s.kv("test.i64", val(int64_t{-9000000000000000000ll}));
  s.kv("test.f64", val(-0.125));
  s.kv("test.empty_string", val(std::string()));
  s.kv("test.strings",
       arr(8, {val(std::string("a")), val(std::string("")), val(std::string("héllo"))}));
  s.kv("test.ints", arr(5, {val(int32_t{1}), val(int32_t{-2}), val(int32_t{3})}));
  s.kv("test.floats", arr(6, {val(0.5f), val(-1.5f)}));
  s.kv("test.empty_array", arr(4, {}));
  s.kv("test.nested", arr(9, {arr(4, {val(uint32_t{1}), val(uint32_t{2})}),
                              arr(8, {val(std::string("x"))}), arr(9, {arr(12, {val(2.5)})})}));
  s.kv("general.alignment", val(uint32_t{32}));
  s.tensors.push_back({"weights.f32", {4, 3}, 0, f32_bytes(kF32Values), {}});
  s.tensors.push_back({"weights.f16", {8}, 1, f16_bytes(kF16Values), {}});
  s.tensors.push_back({"weights.q8_0", {64, 2}, 8, q8_0_bytes(4), {}});
  return s;
}

// --- Fixture --------------------------------------------------------------------

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Parameterized test names hold '/': flatten so TearDown removes it all.
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir_ = fs::temp_directory_path() /
           ("lagserve_gguf_test_" + std::to_string(::getpid()) + "_" + name);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const Bytes& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  // Opens `bytes` and expects an InvalidArgument naming the file and
  // containing every one of `words`.
  void expect_error(const Bytes& bytes, const std::vector<std::string>& words) {
    const std::string path = write("bad.gguf", bytes);
    auto file = GgufFile::open(path);
    ASSERT_FALSE(file.ok()) << "expected an error containing '" << words.front() << "'";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << file.status();
    const std::string message(file.status().message());
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    for (const std::string& w : words) {
      EXPECT_NE(message.find(w), std::string::npos) << "'" << w << "' not in: " << message;
    }
  }

  fs::path dir_;
};

// --- Round trips ------------------------------------------------------------------

class GgufRoundTripTest : public GgufTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(GgufRoundTripTest, ValuesAndTensorsSurvive) {
  const GgufSpec spec = valid_spec(GetParam());
  const std::string path = write("ok.gguf", spec.build());
  auto opened = GgufFile::open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& f = **opened;
  EXPECT_EQ(f.version(), GetParam());
  EXPECT_EQ(f.path(), path);

  // Metadata, in file order, value for value (re-serialized to compare).
  ASSERT_EQ(f.metadata().size(), spec.kvs.size());
  for (size_t i = 0; i < spec.kvs.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].first, spec.kvs[i].first);
    Bytes again;
    put<uint32_t>(again, static_cast<uint32_t>(f.metadata()[i].second.value.index()));
    put_value(again, f.metadata()[i].second);
    EXPECT_EQ(again, spec.kvs[i].second) << spec.kvs[i].first;
  }
  EXPECT_EQ(f.find("missing"), nullptr);

  // Typed getters.
  EXPECT_EQ(*f.get_string("general.architecture"), "llama");
  EXPECT_EQ(*f.get_int("test.u8"), 200);
  EXPECT_EQ(*f.get_int("test.i16"), -30000);
  EXPECT_EQ(*f.get_int("test.u32"), 4000000000ll);
  EXPECT_EQ(*f.get_int("test.i64"), -9000000000000000000ll);
  EXPECT_EQ(*f.get_float("test.f32"), 1.25);
  EXPECT_EQ(*f.get_float("test.f64"), -0.125);
  EXPECT_EQ(*f.get_float("test.i32"), -2000000000.0);
  EXPECT_EQ(*f.get_bool("test.bool"), true);
  EXPECT_EQ(*f.get_string_array("test.strings"), (std::vector<std::string>{"a", "", "héllo"}));
  EXPECT_EQ(*f.get_int_array("test.ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(*f.get_float_array("test.floats"), (std::vector<double>{0.5, -1.5}));
  EXPECT_TRUE(f.get_int_array("test.empty_array")->empty());
  const auto* nested = f.find("test.nested")->as_array();
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->values.size(), 3u);
  EXPECT_EQ(nested->values[2].as_array()->values[0].as_array()->values[0].as_double(), 2.5);

  // Getter errors: missing is NotFound, wrong type or range InvalidArgument.
  EXPECT_EQ(f.get_int("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(f.get_int("general.architecture").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.get_int("test.u64").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.get_int("test.bool").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.get_string("test.u8").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.get_string_array("test.ints").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(f.get_float_array("test.strings").status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(f.get_bool("test.u8").status().message());
  EXPECT_NE(msg.find("test.u8"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;

  // Tensors: directory and data.
  ASSERT_EQ(f.tensors().size(), 3u);
  const GgufTensorInfo* t32 = f.find_tensor("weights.f32");
  ASSERT_NE(t32, nullptr);
  EXPECT_EQ(t32->dims, (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(t32->type, GgmlType::F32);
  EXPECT_EQ(t32->n_elements(), 12);
  EXPECT_EQ(t32->n_bytes, 48u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t32->data) % 32, 0u);
  std::vector<float> out(12);
  ggml_dequantize(t32->type, t32->data, out.data(), 12);
  EXPECT_EQ(out, kF32Values);

  const GgufTensorInfo* t16 = f.find_tensor("weights.f16");
  ASSERT_NE(t16, nullptr);
  EXPECT_EQ(t16->type, GgmlType::F16);
  EXPECT_EQ(t16->offset, 64u);
  out.resize(8);
  ggml_dequantize(t16->type, t16->data, out.data(), 8);
  EXPECT_EQ(out, kF16Values);

  const GgufTensorInfo* tq = f.find_tensor("weights.q8_0");
  ASSERT_NE(tq, nullptr);
  EXPECT_EQ(tq->type, GgmlType::Q8_0);
  EXPECT_EQ(tq->n_bytes, 4u * 34);
  out.resize(128);
  ggml_dequantize(tq->type, tq->data, out.data(), 128);
  for (int i = 0; i < 128; ++i) EXPECT_EQ(out[i], 0.5f * (i % 32 - 16 + i / 32)) << i;
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Versions, GgufRoundTripTest, ::testing::Values(2u, 3u));

TEST_F(GgufTest, CustomAlignmentAndNoTensors) {
  GgufSpec s = valid_spec(3);
  s.kvs.pop_back();  // general.alignment 32
  s.kv("general.alignment", val(uint32_t{64}));
  s.alignment = 64;
  auto f = GgufFile::open(write("a64.gguf", s.build()));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->find_tensor("weights.f16")->offset, 64u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*f)->find_tensor("weights.q8_0")->data) % 64, 0u);

  GgufSpec empty;
  empty.kv("general.architecture", val(std::string("llama")));
  auto g = GgufFile::open(write("empty.gguf", empty.build()));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE((*g)->tensors().empty());
}

// --- Truncation and corruption ----------------------------------------------------

TEST_F(GgufTest, EveryPrefixIsRejectedAsTruncated) {
  const Bytes full = valid_spec(3).build();
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
    expect_error(Bytes(full.begin(), full.begin() + static_cast<ptrdiff_t>(n)), {"truncated"});
    if (HasFailure()) break;
  }
  auto f = GgufFile::open(write("full.gguf", full));
  EXPECT_TRUE(f.ok()) << f.status();
}

TEST_F(GgufTest, RandomCorruptionNeverCrashes) {
  const Bytes full = valid_spec(3).build();
  std::mt19937 rng(1234);
  int failures = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    Bytes b = full;
    const int n_flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_flips; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    auto f = GgufFile::open(write("fuzz.gguf", b));
    if (!f.ok()) {
      ++failures;
      ASSERT_EQ(std::string(f.status().message()).rfind(dir_.string(), 0), 0u) << f.status();
      continue;
    }
    // Whatever opened must be safe to read end to end.
    std::vector<float> out;
    for (const GgufTensorInfo& t : (*f)->tensors()) {
      out.resize(static_cast<size_t>(t.n_elements()));
      ggml_dequantize(t.type, t.data, out.data(), t.n_elements());
    }
  }
  EXPECT_GT(failures, 0);
}

// --- Bad inputs ---------------------------------------------------------------------

TEST_F(GgufTest, RejectsBadMagicAndVersions) {
  Bytes b = valid_spec(3).build();
  std::memcpy(b.data(), "GGML", 4);
  expect_error(b, {"bad magic", "not a GGUF file"});

  for (uint32_t version : {1u, 99u, 0u}) {
    Bytes v = valid_spec(version).build();
    expect_error(v, {"version " + std::to_string(version), "not supported"});
  }
  expect_error(valid_spec(0x03000000).build(), {"big-endian"});
}

TEST_F(GgufTest, RejectsBadTensors) {
  GgufSpec unknown_type = valid_spec(3);
  unknown_type.tensors[1].type = 99;
  expect_error(unknown_type.build(), {"weights.f16", "unknown(99)", "not supported"});

  GgufSpec unsupported_type = valid_spec(3);
  unsupported_type.tensors[2].type = 6;  // Q5_0
  expect_error(unsupported_type.build(), {"weights.q8_0", "Q5_0", "not supported"});

  GgufSpec five_dims = valid_spec(3);
  five_dims.tensors[0].dims = {2, 2, 1, 3, 1};
  expect_error(five_dims.build(), {"weights.f32", "n_dims 5"});

  GgufSpec zero_dim = valid_spec(3);
  zero_dim.tensors[0].dims = {4, 0};
  expect_error(zero_dim.build(), {"weights.f32", "invalid dimension 1 = 0"});

  GgufSpec overflow = valid_spec(3);
  overflow.tensors[0].dims = {1ull << 32, 1ull << 32};
  expect_error(overflow.build(), {"weights.f32", "overflow"});

  GgufSpec bad_row = valid_spec(3);
  bad_row.tensors[2].dims = {48, 2};  // not whole Q8_0 blocks per row
  expect_error(bad_row.build(), {"weights.q8_0", "row length 48", "block size 32"});

  Bytes cut = valid_spec(3).build();
  GgufSpec past_end = valid_spec(3);
  past_end.tensors[2].offset = 1 << 20;
  Bytes past_end_bytes = past_end.build();
  past_end_bytes.resize(cut.size());
  expect_error(past_end_bytes, {"weights.q8_0", "past the end"});
  cut.resize(cut.size() - 1);
  expect_error(cut, {"weights.q8_0", "past the end"});

  GgufSpec misaligned = valid_spec(3);
  misaligned.tensors[1].offset = 48;
  expect_error(misaligned.build(), {"weights.f16", "offset 48", "misaligned", "alignment 32"});

  GgufSpec overlap = valid_spec(3);
  overlap.tensors[1].offset = 32;  // inside weights.f32 (48 bytes from 0)
  expect_error(overlap.build(), {"weights.f16", "overlaps", "weights.f32"});

  GgufSpec duplicate = valid_spec(3);
  duplicate.tensors[1].name = "weights.f32";
  expect_error(duplicate.build(), {"duplicate tensor name 'weights.f32'"});
}

TEST_F(GgufTest, RejectsBadMetadata) {
  GgufSpec huge_string = valid_spec(3);
  Bytes payload;
  put<uint64_t>(payload, 1ull << 62);
  payload.insert(payload.end(), {'a', 'b', 'c'});
  huge_string.kv_raw("test.huge", 8, payload);
  expect_error(huge_string.build(),
               {"truncated", "test.huge", "string needs 4611686018427387904 bytes"});

  Bytes b = GgufSpec().build();  // just the 24-byte header
  b[16] = 1;                     // n_kv = 1, then a key length of 2^56
  Bytes key_len(8, 0);
  key_len[7] = 1;
  b.insert(b.begin() + 24, key_len.begin(), key_len.end());
  b.resize(b.size() + 32, 0);
  expect_error(b, {"truncated", "metadata entry 0 key needs 72057594037927936 bytes"});

  GgufSpec huge_array = valid_spec(3);
  payload.clear();
  put<uint32_t>(payload, 5);  // int32 elements
  put<uint64_t>(payload, 1ull << 60);
  put<int32_t>(payload, 1);
  huge_array.kv_raw("test.huge_array", 9, payload);
  expect_error(huge_array.build(),
               {"truncated", "test.huge_array", "array of 1152921504606846976 int32"});

  GgufSpec huge_strings = valid_spec(3);
  payload.clear();
  put<uint32_t>(payload, 8);  // string elements: at least 8 bytes each
  put<uint64_t>(payload, 1000);
  huge_strings.kv_raw("test.huge_strings", 9, payload);
  expect_error(huge_strings.build(), {"truncated", "test.huge_strings", "array of 1000 string"});

  GgufSpec bad_type = valid_spec(3);
  bad_type.kv_raw("test.bad_type", 13, {0, 0, 0, 0});
  expect_error(bad_type.build(), {"test.bad_type", "unknown value type 13"});

  GgufSpec bad_element = valid_spec(3);
  payload.clear();
  put<uint32_t>(payload, 42);
  put<uint64_t>(payload, 0);
  bad_element.kv_raw("test.bad_element", 9, payload);
  expect_error(bad_element.build(), {"test.bad_element", "unknown element type 42"});

  GgufSpec bad_bool = valid_spec(3);
  bad_bool.kv_raw("test.bad_bool", 7, {2});
  expect_error(bad_bool.build(), {"test.bad_bool", "bool value is 2"});

  GgufSpec deep = valid_spec(3);
  GgufValue v = arr(4, {val(uint32_t{1})});
  for (int i = 0; i < 20; ++i) v = arr(9, {v});
  deep.kv("test.deep", v);
  expect_error(deep.build(), {"test.deep", "nested deeper"});

  GgufSpec duplicate = valid_spec(3);
  duplicate.kv("test.u8", val(uint8_t{1}));
  expect_error(duplicate.build(), {"duplicate metadata key 'test.u8'"});

  GgufSpec bad_alignment = valid_spec(3);
  bad_alignment.kvs.pop_back();
  bad_alignment.kv("general.alignment", val(uint32_t{48}));
  expect_error(bad_alignment.build(), {"general.alignment", "power of two"});

  GgufSpec huge_count = valid_spec(3);
  Bytes c = huge_count.build();
  c[15] = 0x10;  // n_tensors = 2^60
  expect_error(c, {"truncated", "tensors"});
}

TEST_F(GgufTest, MissingFileIsNotFound) {
  const std::string path = (dir_ / "absent.gguf").string();
  auto f = GgufFile::open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(f.status().message()).rfind(path, 0), 0u);
  auto d = GgufFile::open(dir_.string());
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
}

// --- The default model ------------------------------------------------------------

TEST(GgufModelTest, SmolLM2Q4_1) {
  const char* home = std::getenv("HOME");
  const std::string path =
      std::string(home ? home : "") + "/.cache/lagserve/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(path)) GTEST_SKIP() << "no default model at " << path;
  auto opened = GgufFile::open(path);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const GgufFile& f = **opened;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(*f.get_string("general.architecture"), "llama");
  EXPECT_EQ(*f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.tensors().size(), 272u);
  const GgufTensorInfo* embd = f.find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dims, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd->type, GgmlType::Q8_0);
  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 49152u);
  // Every tensor dequantizes to finite values (first row only, to stay quick).
  std::vector<float> row;
  for (const GgufTensorInfo& t : f.tensors()) {
    row.resize(static_cast<size_t>(t.dims[0]));
    ggml_dequantize(t.type, t.data, row.data(), t.dims[0]);
    for (float x : row) ASSERT_TRUE(std::isfinite(x)) << t.name;
  }
}

}  // namespace
}  // namespace lagserve::model
