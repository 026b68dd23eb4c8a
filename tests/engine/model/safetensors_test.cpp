// Tests the safetensors reader on files written here: single files and shards
// with an index (F32/F16/BF16 round trips), every prefix of a file, and each
// kind of bad header. Run: ctest -R Safetensors
#include "engine/model/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/model/fp16.h"

namespace lagserve::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Bytes = std::vector<uint8_t>;

struct TestTensor {
  std::string name;
  std::string dtype;  // as written in the header
  std::vector<int64_t> shape;
  Bytes data;
  std::optional<std::pair<uint64_t, uint64_t>> offsets;  // default: packed in order
};

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
Bytes u16_bytes(const std::vector<uint16_t>& v) {
  Bytes b(v.size() * 2);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Header JSON for `tensors` (plus __metadata__), offsets packed in order.
json make_header(const std::vector<TestTensor>& tensors) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t next = 0;
  for (const TestTensor& t : tensors) {
    const auto offsets = t.offsets.value_or(std::make_pair(next, next + t.data.size()));
    next = std::max(next, offsets.second);
    header[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offsets.first, offsets.second}}};
  }
  return header;
}

Bytes make_file(const std::string& header_text, const std::vector<TestTensor>& tensors) {
  const uint64_t n = header_text.size();
  Bytes out(8 + n);
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header_text.data(), n);
  for (const TestTensor& t : tensors) out.insert(out.end(), t.data.begin(), t.data.end());
  return out;
}
Bytes make_file(const std::vector<TestTensor>& tensors) {
  return make_file(make_header(tensors).dump(), tensors);
}

const std::vector<float> kF32 = {1.f, -2.f, 3.5f, 0.f, 1e-20f, 6.f};
const std::vector<float> kF16 = {0.5f, -1.f, 65504.f, 0.f};
const std::vector<float> kBf16 = {1.f, -3.f, 1e30f, 0.f};

std::vector<TestTensor> valid_tensors() {
  std::vector<uint16_t> h, b;
  for (float f : kF16) h.push_back(f32_to_fp16(f));
  for (float f : kBf16) b.push_back(f32_to_bf16(f));
  return {
      {"model.a.weight", "F32", {2, 3}, f32_bytes(kF32), {}},
      {"model.b.weight", "F16", {4}, u16_bytes(h), {}},
      {"model.c.weight", "BF16", {2, 2}, u16_bytes(b), {}},
      {"model.scalar", "F32", {}, f32_bytes({42.f}), {}},
      {"model.empty", "F32", {0, 3}, {}, {}},
  };
}

std::vector<float> to_f32(const StTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  st_to_f32(t, out.data());
  return out;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lagserve_st_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
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
  std::string write(const std::string& name, const std::string& text) {
    return write(name, Bytes(text.begin(), text.end()));
  }

  // Expects opening to fail with `code`, a message starting with `prefix`
  // and containing every one of `words`.
  template <typename Open>
  void expect_error(Open open, const std::string& prefix, const std::vector<std::string>& words,
                    absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
    auto model = open();
    ASSERT_FALSE(model.ok()) << "expected an error containing '" << words.front() << "'";
    EXPECT_EQ(model.status().code(), code) << model.status();
    const std::string message(model.status().message());
    EXPECT_EQ(message.rfind(prefix, 0), 0u) << message;
    for (const std::string& w : words) {
      EXPECT_NE(message.find(w), std::string::npos) << "'" << w << "' not in: " << message;
    }
  }
  void expect_file_error(const Bytes& bytes, const std::vector<std::string>& words) {
    const std::string path = write("bad.safetensors", bytes);
    expect_error([&] { return SafetensorsModel::open_file(path); }, path + ": ", words);
  }

  fs::path dir_;
};

void expect_valid_tensors(const SafetensorsModel& m) {
  ASSERT_EQ(m.tensors().size(), 5u);
  const StTensor* a = m.find("model.a.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, StDtype::F32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->n_bytes, 24u);
  EXPECT_EQ(to_f32(*a), kF32);
  const StTensor* b = m.find("model.b.weight");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, StDtype::F16);
  EXPECT_EQ(to_f32(*b), kF16);
  const StTensor* c = m.find("model.c.weight");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->dtype, StDtype::BF16);
  std::vector<float> want_bf16;
  for (float f : kBf16) want_bf16.push_back(bf16_to_f32(f32_to_bf16(f)));
  EXPECT_EQ(to_f32(*c), want_bf16);
  EXPECT_EQ(to_f32(*m.find("model.scalar")), std::vector<float>{42.f});
  EXPECT_EQ(m.find("model.empty")->n_elements(), 0);
  EXPECT_EQ(m.find("model.empty")->n_bytes, 0u);
  EXPECT_EQ(m.find("__metadata__"), nullptr);
  EXPECT_EQ(m.find("nope"), nullptr);
}

TEST_F(SafetensorsTest, SingleFileRoundTrip) {
  const std::string path = write("model.safetensors", make_file(valid_tensors()));
  auto by_file = SafetensorsModel::open_file(path);
  ASSERT_TRUE(by_file.ok()) << by_file.status();
  expect_valid_tensors(**by_file);
  auto by_dir = SafetensorsModel::open_dir(dir_.string());
  ASSERT_TRUE(by_dir.ok()) << by_dir.status();
  expect_valid_tensors(**by_dir);
}

class SafetensorsShardTest : public SafetensorsTest {
 protected:
  // Writes two shards and an index for valid_tensors(): a and b in shard 1,
  // the rest in shard 2. `edit` may change the index before it is written.
  std::string write_sharded(const std::function<void(json&)>& edit = {}) {
    std::vector<TestTensor> all = valid_tensors();
    std::vector<TestTensor> one(all.begin(), all.begin() + 2), two(all.begin() + 2, all.end());
    const std::string s1 = "model-00001-of-00002.safetensors";
    const std::string s2 = "model-00002-of-00002.safetensors";
    write(s1, make_file(one));
    write(s2, make_file(two));
    json index = {{"metadata", {{"total_size", 64}}}, {"weight_map", json::object()}};
    for (const TestTensor& t : one) index["weight_map"][t.name] = s1;
    for (const TestTensor& t : two) index["weight_map"][t.name] = s2;
    if (edit) edit(index);
    return write("model.safetensors.index.json", index.dump(2));
  }
  absl::StatusOr<std::unique_ptr<SafetensorsModel>> open() {
    return SafetensorsModel::open_dir(dir_.string());
  }
};

TEST_F(SafetensorsShardTest, ShardedRoundTrip) {
  write_sharded();
  auto m = open();
  ASSERT_TRUE(m.ok()) << m.status();
  expect_valid_tensors(**m);
}

TEST_F(SafetensorsShardTest, RejectsBadIndexes) {
  const std::string index = (dir_ / "model.safetensors.index.json").string();
  write_sharded(
      [](json& j) { j["weight_map"]["model.extra"] = "model-00003-of-00002.safetensors"; });
  expect_error([&] { return open(); }, index + ": ",
               {"model-00003-of-00002.safetensors", "listed in weight_map", "cannot open"},
               absl::StatusCode::kNotFound);

  write_sharded(
      [](json& j) { j["weight_map"]["model.a.weight"] = "model-00002-of-00002.safetensors"; });
  expect_error([&] { return open(); }, index + ": ", {"model.a.weight", "does not hold it"});

  write_sharded([](json& j) { j["weight_map"]["model.a.weight"] = "../evil.safetensors"; });
  expect_error([&] { return open(); }, index + ": ", {"../evil.safetensors", "not a file name"});

  write_sharded([](json& j) { j.erase("weight_map"); });
  expect_error([&] { return open(); }, index + ": ", {"weight_map"});

  write("model.safetensors.index.json", std::string("{\"weight_map\": {"));
  expect_error([&] { return open(); }, index + ": ", {"not valid JSON"});

  // The same tensor in two shards.
  write_sharded();
  std::vector<TestTensor> dup = {valid_tensors()[0]};
  write("model-00002-of-00002.safetensors", make_file(dup));
  expect_error([&] { return open(); }, index + ": ", {"model.a.weight", "earlier file"});
}

TEST_F(SafetensorsTest, EmptyDirIsNotFound) {
  expect_error([&] { return SafetensorsModel::open_dir(dir_.string()); }, dir_.string() + ": ",
               {"model.safetensors"}, absl::StatusCode::kNotFound);
  const std::string path = (dir_ / "absent.safetensors").string();
  expect_error([&] { return SafetensorsModel::open_file(path); }, path + ": ", {"cannot open"},
               absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, EveryPrefixIsRejected) {
  const Bytes full = make_file(valid_tensors());
  for (size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
    const std::string path =
        write("cut.safetensors", Bytes(full.begin(), full.begin() + static_cast<ptrdiff_t>(n)));
    auto m = SafetensorsModel::open_file(path);
    ASSERT_FALSE(m.ok());
    ASSERT_EQ(std::string(m.status().message()).rfind(path + ": ", 0), 0u) << m.status();
  }
}

TEST_F(SafetensorsTest, RejectsBadHeaders) {
  const std::vector<TestTensor> ok = valid_tensors();
  Bytes long_header = make_file(ok);
  long_header[0] = 0xe8;  // header length 1000 + ...: past the end
  long_header[1] = 0x03;
  expect_file_error(long_header, {"header length 1000", "past the end"});
  expect_file_error(Bytes{1, 2, 3}, {"truncated", "8-byte header length"});

  expect_file_error(make_file("{\"a\": [1, 2", ok), {"header", "not valid JSON"});
  expect_file_error(make_file("[1, 2, 3]", {}), {"header", "not a JSON object"});
  expect_file_error(
      make_file("{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                " \"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                {{"x", "F32", {1}, f32_bytes({1.f, 2.f}), {}}}),
      {"duplicate key 'x'"});

  std::vector<TestTensor> out_of_range = ok;
  out_of_range[2].offsets = std::make_pair(uint64_t{40}, uint64_t{4000});
  expect_file_error(make_file(make_header(out_of_range).dump(), ok),
                    {"model.c.weight", "[40, 4000]", "past the data section"});

  std::vector<TestTensor> backwards = ok;
  backwards[0].offsets = std::make_pair(uint64_t{24}, uint64_t{0});
  expect_file_error(make_file(make_header(backwards).dump(), ok),
                    {"model.a.weight", "begin after"});

  std::vector<TestTensor> lying = ok;
  lying[0].shape = {2, 2};  // 16 bytes of F32, but the offsets hold 24
  expect_file_error(make_file(lying),
                    {"model.a.weight", "hold 24 bytes but shape [2, 2] of F32 needs 16 bytes"});

  std::vector<TestTensor> int64 = ok;
  int64[1].dtype = "I64";
  expect_file_error(make_file(int64), {"model.b.weight", "dtype I64 is not supported"});
  std::vector<TestTensor> fp8 = ok;
  fp8[1].dtype = "F8_E4M3";
  expect_file_error(make_file(fp8), {"model.b.weight", "dtype F8_E4M3 is not supported"});

  std::vector<TestTensor> overlap = ok;
  overlap[1].offsets = std::make_pair(uint64_t{16}, uint64_t{24});
  expect_file_error(make_file(make_header(overlap).dump(), ok), {"overlap"});

  std::vector<TestTensor> hole = ok;
  hole[1].offsets = std::make_pair(uint64_t{28}, uint64_t{36});
  Bytes with_hole = make_file(make_header(hole).dump(), ok);
  with_hole.resize(with_hole.size() + 4);
  expect_file_error(with_hole, {"hole"});

  Bytes trailing = make_file(ok);
  trailing.resize(trailing.size() + 8);
  expect_file_error(trailing, {"tensors cover 44 bytes but the data section has 52 bytes"});

  expect_file_error(make_file("{\"x\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", {}),
                    {"'x'", "dtype"});
  expect_file_error(
      make_file("{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", {}),
      {"'x'", "shape [-1]"});
  expect_file_error(
      make_file("{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", {}),
      {"'x'", "data_offsets"});
  expect_file_error(make_file("{\"x\": 3}", {}), {"'x'", "not an object"});
}

}  // namespace
}  // namespace lagserve::model
