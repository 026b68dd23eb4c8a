// write_safetensors: round trips through the engine's reader in F32 and BF16
// (BF16 against hand-rounded bit patterns, ties included), and its errors.
#include "trainer/export/safetensors_writer.h"

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <unistd.h>

#include <gtest/gtest.h>

#include "engine/model/safetensors.h"

namespace lagserve::trainer {
namespace {

namespace fs = std::filesystem;
using model::SafetensorsModel;
using model::StDtype;

float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

class SafetensorsWriter : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lagserve_st_writer_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST(Bf16Rounding, RoundsToNearestEven) {
  // 1.0 is exact.
  EXPECT_EQ(f32_to_bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16_bits(-2.0f), 0xc000);
  // 1 + 2^-8 lies exactly halfway between bf16 1.0 (0x3f80, even) and the
  // next value 0x3f81: a tie, to even, stays 0x3f80.
  EXPECT_EQ(f32_to_bf16_bits(from_bits(0x3f808000)), 0x3f80);
  // Halfway between 0x3f81 (odd) and 0x3f82: the tie goes up to even.
  EXPECT_EQ(f32_to_bf16_bits(from_bits(0x3f818000)), 0x3f82);
  // Just above / below halfway.
  EXPECT_EQ(f32_to_bf16_bits(from_bits(0x3f808001)), 0x3f81);
  EXPECT_EQ(f32_to_bf16_bits(from_bits(0x3f807fff)), 0x3f80);
  // pi = 0x40490fdb: low half 0x0fdb < 0x8000, truncates to 0x4049.
  EXPECT_EQ(f32_to_bf16_bits(3.14159265f), 0x4049);
  // 0.1 = 0x3dcccccd: low half 0xcccd > 0x8000, rounds up to 0x3dcd.
  EXPECT_EQ(f32_to_bf16_bits(0.1f), 0x3dcd);
  // The largest float rounds past bf16's range to infinity; inf stays inf.
  EXPECT_EQ(f32_to_bf16_bits(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(f32_to_bf16_bits(-std::numeric_limits<float>::infinity()), 0xff80);
  // NaN stays NaN even when its payload sits in the low bits only.
  const uint16_t nan = f32_to_bf16_bits(from_bits(0x7f800001));
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0);
}

TEST_F(SafetensorsWriter, F32RoundTripsBitExact) {
  std::vector<float> a(6), b = {-0.0f, 1e-40f, std::numeric_limits<float>::infinity()};
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(static_cast<float>(i) + 0.5f) * 1e3f;
  const std::vector<float> empty;
  const std::vector<TensorView> tensors = {
      {"layer.a", {2, 3}, a}, {"b", {3}, b}, {"empty", {0, 4}, empty}};
  ASSERT_TRUE(write_safetensors(path("m.safetensors"), tensors, SaveDtype::F32,
                                {{"format", "pt"}})
                  .ok());
  EXPECT_FALSE(fs::exists(path("m.safetensors.tmp")));
  // The header length keeps the data 8-byte aligned.
  EXPECT_EQ((fs::file_size(path("m.safetensors")) - 8 - 4 * 9) % 8, 0u);

  auto st = SafetensorsModel::open_file(path("m.safetensors"));
  ASSERT_TRUE(st.ok()) << st.status();
  ASSERT_EQ((*st)->tensors().size(), 3u);
  const model::StTensor* ta = (*st)->find("layer.a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta->dtype, StDtype::F32);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> got(6);
  model::st_to_f32(*ta, got.data());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(a[i])) << i;
  }
  const model::StTensor* tb = (*st)->find("b");
  ASSERT_NE(tb, nullptr);
  got.resize(3);
  model::st_to_f32(*tb, got.data());
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(b[i])) << i;
  }
  const model::StTensor* te = (*st)->find("empty");
  ASSERT_NE(te, nullptr);
  EXPECT_EQ(te->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(te->n_bytes, 0u);

  // The metadata is in the header as written.
  std::ifstream in(path("m.safetensors"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(bytes.find("\"__metadata__\":{\"format\":\"pt\"}"), std::string::npos);
}

TEST_F(SafetensorsWriter, Bf16RoundTripsAsRounded) {
  const std::vector<float> values = {1.0f,
                                     from_bits(0x3f808000),  // tie -> even (down)
                                     from_bits(0x3f818000),  // tie -> even (up)
                                     from_bits(0x3f808001),  // above the tie
                                     3.14159265f,
                                     0.1f,
                                     -1.5f};
  const std::vector<uint32_t> want_bits = {0x3f800000, 0x3f800000, 0x3f820000, 0x3f810000,
                                           0x40490000, 0x3dcd0000, 0xbfc00000};
  const std::vector<TensorView> tensors = {{"x", {7}, values}};
  ASSERT_TRUE(write_safetensors(path("b.safetensors"), tensors, SaveDtype::BF16).ok());
  auto st = SafetensorsModel::open_file(path("b.safetensors"));
  ASSERT_TRUE(st.ok()) << st.status();
  const model::StTensor* t = (*st)->find("x");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDtype::BF16);
  EXPECT_EQ(t->n_bytes, 14u);
  std::vector<float> got(values.size());
  model::st_to_f32(*t, got.data());
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), want_bits[i]) << i;
  }
}

TEST_F(SafetensorsWriter, LargeBf16TensorSpansConversionChunks) {
  std::vector<float> values(200'003);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  const std::vector<TensorView> tensors = {{"big", {200'003}, values}};
  ASSERT_TRUE(write_safetensors(path("big.safetensors"), tensors, SaveDtype::BF16).ok());
  auto st = SafetensorsModel::open_file(path("big.safetensors"));
  ASSERT_TRUE(st.ok()) << st.status();
  std::vector<float> got(values.size());
  model::st_to_f32(*(*st)->find("big"), got.data());
  for (size_t i = 0; i < values.size(); i += 997) {
    EXPECT_EQ(std::bit_cast<uint32_t>(got[i]),
              static_cast<uint32_t>(f32_to_bf16_bits(values[i])) << 16)
        << i;
  }
}

TEST_F(SafetensorsWriter, RejectsDuplicateNames) {
  const std::vector<float> a = {1, 2};
  const std::vector<TensorView> tensors = {{"w", {2}, a}, {"w", {2}, a}};
  absl::Status st = write_safetensors(path("d.safetensors"), tensors, SaveDtype::F32);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("duplicate tensor name 'w'"), std::string::npos) << st;
  EXPECT_NE(st.message().find(path("d.safetensors")), std::string::npos) << st;
  EXPECT_FALSE(fs::exists(path("d.safetensors")));
  EXPECT_FALSE(fs::exists(path("d.safetensors.tmp")));
}

TEST_F(SafetensorsWriter, RejectsShapeDataMismatch) {
  const std::vector<float> a = {1, 2, 3, 4, 5};
  const std::vector<TensorView> tensors = {{"w", {2, 3}, a}};
  absl::Status st = write_safetensors(path("s.safetensors"), tensors, SaveDtype::BF16);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tensor 'w': shape [2, 3] has 6 elements but the data has 5"),
            std::string::npos)
      << st;
  EXPECT_FALSE(fs::exists(path("s.safetensors")));
}

TEST_F(SafetensorsWriter, RejectsBadNamesAndShapes) {
  const std::vector<float> a = {1};
  const std::vector<TensorView> meta = {{"__metadata__", {1}, a}};
  EXPECT_EQ(write_safetensors(path("x.safetensors"), meta, SaveDtype::F32).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<TensorView> unnamed = {{"", {1}, a}};
  EXPECT_EQ(write_safetensors(path("x.safetensors"), unnamed, SaveDtype::F32).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<TensorView> negative = {{"n", {-1}, a}};
  EXPECT_EQ(write_safetensors(path("x.safetensors"), negative, SaveDtype::F32).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SafetensorsWriter, ReportsIoFailureWithPath) {
  const std::vector<float> a = {1};
  const std::vector<TensorView> tensors = {{"w", {1}, a}};
  const std::string bad = path("no/such/dir/m.safetensors");
  absl::Status st = write_safetensors(bad, tensors, SaveDtype::F32);
  EXPECT_EQ(st.code(), absl::StatusCode::kInternal);
  EXPECT_NE(st.message().find(bad), std::string::npos) << st;
}

TEST_F(SafetensorsWriter, ReplacesAnExistingFile) {
  const std::vector<float> a = {1, 2, 3}, b = {4};
  const std::vector<TensorView> first = {{"a", {3}, a}}, second = {{"b", {1}, b}};
  ASSERT_TRUE(write_safetensors(path("r.safetensors"), first, SaveDtype::F32).ok());
  ASSERT_TRUE(write_safetensors(path("r.safetensors"), second, SaveDtype::F32).ok());
  auto st = SafetensorsModel::open_file(path("r.safetensors"));
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ((*st)->find("a"), nullptr);
  ASSERT_NE((*st)->find("b"), nullptr);
}

}  // namespace
}  // namespace lagserve::trainer
