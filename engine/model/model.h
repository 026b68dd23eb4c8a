// A loaded model: hyper-parameters, fp32 weights fused for the forward pass,
// tokenizer and chat template text. Loaded from GGUF or a Hugging Face folder.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "engine/model/tokenizer.h"

namespace lagserve::model {

struct LayerWeights {
  std::vector<float> attn_norm;  // [d_model]
  std::vector<float> wqkv;       // [q_dim + 2 kv_dim, d_model]: q rows, k rows, v rows
  std::vector<float> bqkv;       // [q_dim + 2 kv_dim], empty without QKV bias
  std::vector<float> wo;         // [d_model, q_dim]
  std::vector<float> ffn_norm;   // [d_model]
  std::vector<float> w_gate_up;  // [2 d_ff, d_model]: gate rows then up rows
  std::vector<float> w_down;     // [d_model, d_ff]
};

struct ModelWeights {
  std::vector<float> tok_embd;  // [vocab, d_model]
  std::vector<float> out_norm;  // [d_model]
  std::vector<float> output;    // [vocab, d_model]; empty when tied to tok_embd
  std::vector<LayerWeights> layers;

  const std::vector<float>& output_head() const { return output.empty() ? tok_embd : output; }
};

struct Model {
  std::string source;  // the path it was loaded from
  ModelConfig config;
  ModelWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;
  std::string chat_template;  // Jinja text as shipped, empty if none
};

struct LoadOptions {
  bool weights = true;  // false: config, tokenizer and template only (tokenize)
};

// Loads a GGUF file or a Hugging Face model folder (config.json,
// model.safetensors[.index.json], tokenizer.json, tokenizer_config.json).
// Every problem is a status whose message names the file and what is wrong.
absl::StatusOr<std::unique_ptr<Model>> load_model(const std::string& path,
                                                  const LoadOptions& options = {});

// "default" resolves to the cached default model (scripts/fetch_model.py puts
// it there); other paths are returned unchanged.
absl::StatusOr<std::string> resolve_model_path(const std::string& path);

}  // namespace lagserve::model
