// Inputs that made a fuzz target (tests/fuzz) crash, run out of memory or
// trip a sanitizer, kept byte for byte under tests/fuzz/regressions/<target>/:
// each must now give a clean error status that names the problem.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "engine/model/model.h"
#include "engine/model/model_config.h"
#include "tests/common/file_io.h"

namespace lagserve::model {
namespace {

using testing_util::read_file;

namespace fs = std::filesystem;
const fs::path kRegressions = fs::path(LAGSERVE_SOURCE_DIR) / "tests/fuzz/regressions";

// gguf_fuzz: load_model on the file as it is.
std::string gguf_error(const char* name) {
  auto m = load_model((kRegressions / "gguf" / name).string());
  EXPECT_FALSE(m.ok()) << name;
  return m.ok() ? "" : std::string(m.status().message());
}

#define EXPECT_HAS(message, words) \
  EXPECT_NE((message).find(words), std::string::npos) << (message)

// block_count 67108865 with one layer's tensors: the loader sized all layers
// up front (11 GB) before finding the first one missing.
TEST(FuzzRegression, GgufHugeLayerCountDoesNotAllocate) {
  EXPECT_HAS(gguf_error("oom-layer-count"), "missing tensor 'blk.0.attn_norm.weight'");
}

// embedding_length 4244570144 (a u32 past int32): it wrapped, and head_dim
// d_model / heads = 1061142536 sized a 4 GB RoPE table before any check.
TEST(FuzzRegression, GgufHugeEmbeddingLengthIsRefused) {
  EXPECT_HAS(gguf_error("oom-rope-table"), "llama.embedding_length = 4244570144 is out of range");
}

}  // namespace
}  // namespace lagserve::model
