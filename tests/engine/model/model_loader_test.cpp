// load_model on broken models: unknown architectures, missing and mis-shaped
// tensors, in Hugging Face folders and GGUF files. Each is a clear status
// naming the problem, never a crash. The broken models are made here from the
// committed tiny models (tests/golden/make_logits_golden.py).
#include "engine/model/model.h"
#include "tests/common/file_io.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace lagserve::model {
namespace {

using testing_util::read_file;
using testing_util::write_file;

namespace fs = std::filesystem;
const fs::path kModels = fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models";

void replace_once(std::string& s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
}

class ModelLoader : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lagserve_loader_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
            "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A copy of tiny-llama whose config.json has `from` replaced by `to`.
  fs::path hf_with_config_edit(const std::string& from, const std::string& to) {
    fs::path d = dir_ / "hf";
    fs::copy(kModels / "tiny-llama", d);
    std::string cfg = read_file(d / "config.json");
    replace_once(cfg, from, to);
    write_file(d / "config.json", cfg);
    return d;
  }
  // A copy of tiny-llama.gguf with bytes `from` replaced by `to` (same length).
  fs::path gguf_with_patch(const std::string& from, const std::string& to) {
    std::string bytes = read_file(kModels / "tiny-llama.gguf");
    replace_once(bytes, from, to);
    fs::path p = dir_ / "model.gguf";
    write_file(p, bytes);
    return p;
  }
  fs::path dir_;
};

std::string error_of(const fs::path& p) {
  auto m = load_model(p.string());
  EXPECT_FALSE(m.ok()) << p;
  return m.ok() ? "" : std::string(m.status().message());
}

TEST_F(ModelLoader, GoodModelsLoad) {
  for (const char* name : {"tiny-llama", "tiny-qwen2", "tiny-llama.gguf"}) {
    auto m = load_model((kModels / name).string());
    ASSERT_TRUE(m.ok()) << name << ": " << m.status();
    EXPECT_EQ((*m)->config.n_layers, 2);
    EXPECT_EQ((*m)->config.n_kv_heads, 2);
  }
}

TEST_F(ModelLoader, UnknownArchitectureInConfigJson) {
  const auto msg = error_of(hf_with_config_edit("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\""));
  EXPECT_NE(msg.find("unknown architecture 'gpt_neox'"), std::string::npos) << msg;
}

TEST_F(ModelLoader, MissingTensorInSafetensors) {
  const auto msg = error_of(hf_with_config_edit("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"));
  EXPECT_NE(msg.find("missing tensor 'model.layers.2.input_layernorm.weight'"), std::string::npos)
      << msg;
}

TEST_F(ModelLoader, MisShapedTensorInSafetensors) {
  const auto msg = error_of(hf_with_config_edit("\"intermediate_size\": 96", "\"intermediate_size\": 97"));
  EXPECT_NE(msg.find("has shape [96, 64], expected [97, 64]"), std::string::npos) << msg;
}

TEST_F(ModelLoader, InconsistentHeadsInConfig) {
  const auto msg = error_of(hf_with_config_edit("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"));
  EXPECT_NE(msg.find("not a multiple of 3 kv heads"), std::string::npos) << msg;
}

TEST_F(ModelLoader, UnknownArchitectureInGguf) {
  // Key, type tag 8 (string), u64 length 5, then the value "llama".
  const std::string head = "general.architecture" + std::string("\x08\0\0\0\x05\0\0\0\0\0\0\0", 12);
  const auto msg = error_of(gguf_with_patch(head + "llama", head + "llamb"));
  EXPECT_NE(msg.find("unknown architecture"), std::string::npos) << msg;
}

TEST_F(ModelLoader, MissingTensorInGguf) {
  const auto msg = error_of(gguf_with_patch("blk.1.ffn_up.weight", "blk.1.ffn_uq.weight"));
  EXPECT_NE(msg.find("missing tensor 'blk.1.ffn_up.weight'"), std::string::npos) << msg;
}

TEST_F(ModelLoader, MisShapedTensorInGguf) {
  // The u32 96 follows the key "llama.feed_forward_length" and its type tag 4.
  std::string key = "llama.feed_forward_length";
  std::string from = key + std::string("\x04\x00\x00\x00\x60\x00\x00\x00", 8);
  std::string to = key + std::string("\x04\x00\x00\x00\x61\x00\x00\x00", 8);
  const auto msg = error_of(gguf_with_patch(from, to));
  EXPECT_NE(msg.find("expected [97, 64]"), std::string::npos) << msg;
}

TEST_F(ModelLoader, MissingPathAndDefault) {
  const auto msg = error_of(dir_ / "nope.gguf");
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
}

}  // namespace
}  // namespace lagserve::model
