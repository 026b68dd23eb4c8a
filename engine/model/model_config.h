// Model hyper-parameters, read from GGUF metadata or a Hugging Face
// config.json, with named presets of what each architecture implies.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {

class GgufFile;

enum class Arch { Llama, Qwen2 };

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string arch_name;  // as the file spells it ("llama", "qwen2", "mistral")
  int32_t n_layers = 0;
  int32_t d_model = 0;
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t d_ff = 0;
  int32_t vocab_size = 0;
  int32_t max_positions = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.f;
  // RoPE inverse frequencies, [head_dim / 2], with any scaling (Llama-3,
  // linear, GGUF rope_freqs) already applied. Rotation is NeoX style: channel
  // i pairs with i + head_dim/2 (Hugging Face layout).
  std::vector<float> rope_inv_freq;
  bool qkv_bias = false;        // Qwen2
  bool tied_embeddings = false;  // output head shares token_embd

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads the hyper-parameters of a GGUF model. The RoPE table is filled
// without GGUF rope_freqs factors (the loader applies those, being a tensor).
absl::StatusOr<ModelConfig> config_from_gguf(const GgufFile& gguf);
// Parses a Hugging Face config.json (its text).
absl::StatusOr<ModelConfig> config_from_hf_json(const std::string& json_text,
                                                const std::string& origin);

// Checks that the numbers agree with each other (heads divide, dims > 0).
absl::Status config_validate(const ModelConfig& config, const std::string& origin);

// Base RoPE inverse frequencies theta^(-2i/head_dim), i < head_dim/2.
std::vector<float> rope_inv_freq_base(float theta, int32_t head_dim);
// Llama-3 scaling of inv_freq (HF `rope_type: llama3`).
void rope_apply_llama3(std::vector<float>& inv_freq, float factor,
                       float low_freq_factor, float high_freq_factor,
                       float original_max_positions);

}  // namespace lagserve::model
