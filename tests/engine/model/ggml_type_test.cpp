// Tests ggml type geometry and dequantization against golden data written by
// tests/golden/make_dequant_golden.py with the gguf Python package (an
// independent implementation). Run: ctest -R GgmlType
#include "engine/model/ggml_type.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/model/fp16.h"

namespace lagserve::model {
namespace {

const std::string kGoldenDir = std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/dequant/";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(GgmlTypeTest, DequantizeMatchesGoldenFromGgufPy) {
  std::ifstream manifest_in(kGoldenDir + "manifest.json");
  ASSERT_TRUE(manifest_in.good()) << "missing golden data; run tests/golden/make_dequant_golden.py";
  const nlohmann::json manifest = nlohmann::json::parse(manifest_in);
  std::vector<std::string> covered;
  for (const auto& entry : manifest["types"]) {
    const std::string name = entry["name"];
    SCOPED_TRACE(name);
    const auto type = static_cast<GgmlType>(entry["ggml_type"].get<uint32_t>());
    const int64_t n = entry["n_elements"];
    ASSERT_EQ(ggml_type_name(type), name);
    ASSERT_TRUE(ggml_type_supported(type));

    const std::vector<uint8_t> quant = read_bytes(kGoldenDir + entry["quant"].get<std::string>());
    const std::vector<uint8_t> expected_bytes =
        read_bytes(kGoldenDir + entry["expected"].get<std::string>());
    ASSERT_EQ(expected_bytes.size(), static_cast<size_t>(n) * 4);
    auto n_bytes = ggml_n_bytes(type, n);
    ASSERT_TRUE(n_bytes.ok()) << n_bytes.status();
    ASSERT_EQ(quant.size(), *n_bytes);

    std::vector<float> expected(n);
    std::memcpy(expected.data(), expected_bytes.data(), expected_bytes.size());
    // Poison the output so that an element we fail to write shows.
    std::vector<float> got(n, std::numeric_limits<float>::quiet_NaN());
    ggml_dequantize(type, quant.data(), got.data(), n);
    // NOTE: bit-exact by construction (see the note in ggml_type.cpp); inf
    // compares equal to itself and the golden data holds no NaN.
    int mismatches = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(expected[i]) &&
          ++mismatches <= 10) {
        ADD_FAILURE() << "element " << i << ": got " << got[i] << " expected " << expected[i];
      }
    }
    EXPECT_EQ(mismatches, 0);
    covered.push_back(name);
  }
  EXPECT_EQ(covered.size(), 9u) << "golden data should cover every supported type";
}

TEST(GgmlTypeTest, BlockGeometryMatchesGgml) {
  struct Case {
    GgmlType type;
    int64_t elements;
    int64_t bytes;
  };
  for (const Case& c :
       {Case{GgmlType::F32, 1, 4}, Case{GgmlType::F16, 1, 2}, Case{GgmlType::BF16, 1, 2},
        Case{GgmlType::Q8_0, 32, 34}, Case{GgmlType::Q4_0, 32, 18}, Case{GgmlType::Q4_1, 32, 20},
        Case{GgmlType::Q4_K, 256, 144}, Case{GgmlType::Q5_K, 256, 176},
        Case{GgmlType::Q6_K, 256, 210}}) {
    SCOPED_TRACE(ggml_type_name(c.type));
    EXPECT_EQ(ggml_block_elements(c.type), c.elements);
    EXPECT_EQ(ggml_block_bytes(c.type), c.bytes);
  }
}

TEST(GgmlTypeTest, NamesAndSupport) {
  EXPECT_EQ(ggml_type_name(GgmlType::Q4_K), "Q4_K");
  EXPECT_EQ(ggml_type_name(GgmlType::BF16), "BF16");
  EXPECT_EQ(ggml_type_name(GgmlType::Q5_0), "Q5_0");
  EXPECT_EQ(ggml_type_name(static_cast<GgmlType>(77)), "unknown(77)");
  // Views of unknown names stay valid across calls.
  const std::string_view a = ggml_type_name(static_cast<GgmlType>(100));
  const std::string_view b = ggml_type_name(static_cast<GgmlType>(101));
  EXPECT_EQ(a, "unknown(100)");
  EXPECT_EQ(b, "unknown(101)");
  EXPECT_FALSE(ggml_type_supported(GgmlType::Q5_0));
  EXPECT_FALSE(ggml_type_supported(GgmlType::Q2_K));
  EXPECT_FALSE(ggml_type_supported(static_cast<GgmlType>(77)));
}

TEST(GgmlTypeTest, NBytes) {
  EXPECT_EQ(*ggml_n_bytes(GgmlType::F32, 10), 40u);
  EXPECT_EQ(*ggml_n_bytes(GgmlType::BF16, 0), 0u);
  EXPECT_EQ(*ggml_n_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(*ggml_n_bytes(GgmlType::Q6_K, 512), 420u);
  EXPECT_EQ(*ggml_n_bytes(GgmlType::Q4_1, int64_t{576} * 49152), 576u * 49152 / 32 * 20);
}

TEST(GgmlTypeTest, NBytesErrors) {
  auto not_multiple = ggml_n_bytes(GgmlType::Q4_K, 300);
  ASSERT_FALSE(not_multiple.ok());
  EXPECT_EQ(not_multiple.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(not_multiple.status().message().find("not a multiple of the Q4_K block size 256"),
            absl::string_view::npos)
      << not_multiple.status();

  auto unsupported = ggml_n_bytes(GgmlType::Q5_0, 32);
  ASSERT_FALSE(unsupported.ok());
  EXPECT_NE(unsupported.status().message().find("Q5_0 is not supported"), absl::string_view::npos)
      << unsupported.status();

  auto unknown = ggml_n_bytes(static_cast<GgmlType>(1234), 32);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown(1234)"), absl::string_view::npos);

  EXPECT_FALSE(ggml_n_bytes(GgmlType::F32, -4).ok());
  auto overflow = ggml_n_bytes(GgmlType::F32, std::numeric_limits<int64_t>::max());
  ASSERT_FALSE(overflow.ok());
  EXPECT_NE(overflow.status().message().find("overflow"), absl::string_view::npos);
}

// fp16 -> fp32 for all 65536 inputs against a direct reading of the format:
// (-1)^s * 2^(e-15) * (1 + m/1024), subnormals 2^-14 * m/1024.
TEST(GgmlTypeTest, Fp16AllHalvesConvertExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    const float got = fp16_to_f32(static_cast<uint16_t>(h));
    if (exp == 31) {
      if (mant == 0) {
        EXPECT_TRUE(std::isinf(got) && std::signbit(got) == (sign != 0)) << h;
      } else {
        EXPECT_TRUE(std::isnan(got)) << h;
      }
      continue;
    }
    const double magnitude =
        exp == 0 ? std::ldexp(mant / 1024.0, -14) : std::ldexp(1.0 + mant / 1024.0, exp - 15);
    const double want = sign ? -magnitude : magnitude;
    ASSERT_EQ(got, static_cast<float>(want)) << "h=" << h;
    ASSERT_EQ(std::signbit(got), sign != 0) << "h=" << h;
    // And back: every finite half survives a round trip bit for bit.
    ASSERT_EQ(f32_to_fp16(got), h) << "h=" << h;
  }
}

TEST(GgmlTypeTest, Fp16RoundsToNearestEven) {
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to even (1.0).
  EXPECT_EQ(f32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9: up.
  EXPECT_EQ(f32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_fp16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_fp16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7c00);  // ties to even -> overflows to inf
  EXPECT_EQ(f32_to_fp16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // half of the smallest: ties to 0
  EXPECT_EQ(f32_to_fp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(f32_to_fp16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_TRUE(std::isnan(fp16_to_f32(f32_to_fp16(std::numeric_limits<float>::quiet_NaN()))));
#ifdef __FLT16_MAX__
  // Against the compiler's own conversion on random inputs over the range.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> exponent(-27.0f, 17.0f);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::exp2(exponent(rng)) * (rng() & 1 ? -1.0f : 1.0f);
    const _Float16 ref = static_cast<_Float16>(f);
    ASSERT_EQ(f32_to_fp16(f), std::bit_cast<uint16_t>(ref)) << f;
  }
#endif
}

TEST(GgmlTypeTest, Bf16ConvertsAndRounds) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie to even
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie to even, up
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_to_f32(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      ASSERT_EQ(f32_to_bf16(f), b);
    }
  }
}

}  // namespace
}  // namespace lagserve::model
