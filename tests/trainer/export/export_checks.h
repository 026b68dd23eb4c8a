// Shared checks of the export tests: a temporary folder, bitwise weight and
// config comparison, and tokenizers that must encode and decode alike.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model/model.h"

namespace lagserve::trainer::testing {

// A fresh folder under the system temp dir, removed with everything in it.
// With LAGSERVE_EXPORT_KEEP=<dir> in the environment it is <dir>/<tag> and
// is kept, so that the exports can be inspected (or loaded by transformers).
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    const char* keep = std::getenv("LAGSERVE_EXPORT_KEEP");
    keep_ = keep != nullptr && *keep != '\0';
    path_ = keep_ ? std::filesystem::path(keep) / tag
                  : std::filesystem::temp_directory_path() /
                        ("lagserve_export_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    if (!keep_) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& sub = "") const { return (path_ / sub).string(); }

 private:
  std::filesystem::path path_;
  bool keep_ = false;
};

inline void expect_bitwise_equal(const std::vector<float>& got, const std::vector<float>& want,
                                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  // (memcmp of two empty vectors would pass null pointers: undefined behaviour)
  if (got.empty() || std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0) return;
  for (size_t i = 0; i < got.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    ASSERT_EQ(a, b) << what << " differs first at element " << i << ": " << got[i] << " vs "
                    << want[i];
  }
}

inline void expect_weights_equal(const model::ModelWeights& got, const model::ModelWeights& want) {
  expect_bitwise_equal(got.tok_embd, want.tok_embd, "tok_embd");
  expect_bitwise_equal(got.out_norm, want.out_norm, "out_norm");
  expect_bitwise_equal(got.output, want.output, "output");
  ASSERT_EQ(got.layers.size(), want.layers.size());
  for (size_t l = 0; l < got.layers.size(); ++l) {
    const model::LayerWeights &g = got.layers[l], &w = want.layers[l];
    const std::string p = "layer " + std::to_string(l) + " ";
    expect_bitwise_equal(g.attn_norm, w.attn_norm, p + "attn_norm");
    expect_bitwise_equal(g.wqkv, w.wqkv, p + "wqkv");
    expect_bitwise_equal(g.bqkv, w.bqkv, p + "bqkv");
    expect_bitwise_equal(g.wo, w.wo, p + "wo");
    expect_bitwise_equal(g.ffn_norm, w.ffn_norm, p + "ffn_norm");
    expect_bitwise_equal(g.w_gate_up, w.w_gate_up, p + "w_gate_up");
    expect_bitwise_equal(g.w_down, w.w_down, p + "w_down");
  }
}

inline void expect_config_equal(const model::ModelConfig& got, const model::ModelConfig& want) {
  EXPECT_EQ(got.arch, want.arch);
  EXPECT_EQ(got.n_layers, want.n_layers);
  EXPECT_EQ(got.d_model, want.d_model);
  EXPECT_EQ(got.n_heads, want.n_heads);
  EXPECT_EQ(got.n_kv_heads, want.n_kv_heads);
  EXPECT_EQ(got.head_dim, want.head_dim);
  EXPECT_EQ(got.d_ff, want.d_ff);
  EXPECT_EQ(got.vocab_size, want.vocab_size);
  EXPECT_EQ(got.max_positions, want.max_positions);
  EXPECT_EQ(got.rms_eps, want.rms_eps);
  EXPECT_EQ(got.rope_theta, want.rope_theta);
  EXPECT_EQ(got.rope_inv_freq, want.rope_inv_freq);
  EXPECT_EQ(got.qkv_bias, want.qkv_bias);
  EXPECT_EQ(got.tied_embeddings, want.tied_embeddings);
}

// Same vocabulary, specials, BOS/EOS, and the same ids for every text in
// each mode (BOS or not, special tokens parsed or not); decoding gives the
// text back alike.
inline void expect_same_tokenizer(const model::Tokenizer& got, const model::Tokenizer& want,
                                  const std::vector<std::string>& texts) {
  ASSERT_EQ(got.vocab_size(), want.vocab_size());
  EXPECT_EQ(got.bos_id(), want.bos_id());
  EXPECT_EQ(got.eos_id(), want.eos_id());
  EXPECT_EQ(got.add_bos_default(), want.add_bos_default());
  EXPECT_EQ(got.stop_ids(), want.stop_ids());
  for (int32_t id = 0; id < want.vocab_size(); ++id) {
    ASSERT_EQ(got.token_text(id), want.token_text(id)) << "token " << id;
    ASSERT_EQ(got.is_special(id), want.is_special(id)) << "token " << id;
  }
  for (const std::string& text : texts) {
    for (bool parse_special : {true, false}) {
      const std::vector<int32_t> ids = want.encode(text, want.add_bos_default(), parse_special);
      EXPECT_EQ(got.encode(text, got.add_bos_default(), parse_special), ids)
          << "text: " << text << " parse_special " << parse_special;
      EXPECT_EQ(got.decode(ids), want.decode(ids)) << "text: " << text;
    }
  }
}

}  // namespace lagserve::trainer::testing
