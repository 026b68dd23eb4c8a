// Reading ModelConfig from GGUF metadata and Hugging Face config.json.
#include "engine/model/model_config.h"

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <numbers>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/common/status_macros.h"
#include "engine/model/architectures/architecture.h"
#include "engine/model/gguf.h"

namespace lagserve::model {
namespace {

absl::StatusOr<Arch> arch_from_name(const std::string& name, const std::string& origin) {
  // NOTE: Mistral without sliding window is a Llama; GGUF files call it llama.
  if (name == "llama" || name == "mistral") return Arch::Llama;
  if (name == "qwen2") return Arch::Qwen2;
  return absl::InvalidArgumentError(fmt::format(
      "{}: unknown architecture '{}' (supported: llama, mistral, qwen2)", origin, name));
}

// A size as the file gives it (int64) narrowed to int32, or an error naming
// the key: a plain cast would wrap 2^32 + 2 layers to 2.
absl::StatusOr<int32_t> to_i32(int64_t v, std::string_view key, const std::string& origin) {
  if (v < INT32_MIN || v > INT32_MAX) {
    return absl::InvalidArgumentError(
        fmt::format("{}: bad model config: {} = {} is out of range", origin, key, v));
  }
  return static_cast<int32_t>(v);
}

// Larger heads are surely a corrupt file (the largest in use are 256 wide);
// the RoPE table is built only below this, before config_validate refuses it.
constexpr int32_t kMaxHeadDim = 4096;
bool rope_table_possible(int32_t head_dim) {
  return head_dim > 0 && head_dim <= kMaxHeadDim && head_dim % 2 == 0;
}

// A double as float. Values beyond float's range become NaN, which
// config_validate refuses (casting them would be undefined behaviour).
float to_f32(double v) { return std::fabs(v) > FLT_MAX ? NAN : static_cast<float>(v); }

}  // namespace

std::vector<float> rope_inv_freq_base(float theta, int32_t head_dim) {
  std::vector<float> inv(head_dim / 2);
  for (int32_t i = 0; i < head_dim / 2; ++i) {
    inv[i] = to_f32(1.0 / std::pow(static_cast<double>(theta), 2.0 * i / head_dim));
  }
  return inv;
}

void rope_apply_llama3(std::vector<float>& inv_freq, float factor,
                       float low_freq_factor, float high_freq_factor,
                       float original_max_positions) {
  const double low_wavelen = original_max_positions / low_freq_factor;
  const double high_wavelen = original_max_positions / high_freq_factor;
  for (float& f : inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      f = to_f32(f / factor);
      continue;
    }
    const double smooth = (original_max_positions / wavelen - low_freq_factor) /
                          (high_freq_factor - low_freq_factor);
    f = to_f32((1.0 - smooth) * f / factor + smooth * f);
  }
}

absl::Status config_validate(const ModelConfig& c, const std::string& origin) {
  auto bad = [&](std::string what) {
    return absl::InvalidArgumentError(fmt::format("{}: bad model config: {}", origin, what));
  };
  if (c.n_layers <= 0 || c.d_model <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
      c.d_ff <= 0 || c.vocab_size <= 0 || c.head_dim <= 0) {
    return bad(fmt::format("non-positive size (layers {}, d_model {}, heads {}, kv heads {}, "
                           "d_ff {}, vocab {}, head_dim {})",
                           c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff,
                           c.vocab_size, c.head_dim));
  }
  if (int64_t{c.n_heads} * c.head_dim > INT32_MAX || int64_t{c.n_kv_heads} * c.head_dim > INT32_MAX) {
    return bad(fmt::format("{} heads x head_dim {} is too large", c.n_heads, c.head_dim));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return bad(fmt::format("{} heads is not a multiple of {} kv heads", c.n_heads, c.n_kv_heads));
  }
  if (c.head_dim % 2 != 0) return bad(fmt::format("odd head_dim {}", c.head_dim));
  if (c.head_dim > kMaxHeadDim) {
    return bad(fmt::format("head_dim {} is larger than {}", c.head_dim, kMaxHeadDim));
  }
  if (static_cast<int32_t>(c.rope_inv_freq.size()) != c.head_dim / 2) {
    return bad("RoPE table size does not match head_dim");
  }
  if (!(c.rms_eps > 0) || !(c.rope_theta > 0) || !std::isfinite(c.rms_eps) ||
      !std::isfinite(c.rope_theta)) {
    return bad(fmt::format("rms_eps ({}) and rope_theta ({}) must be finite and > 0", c.rms_eps,
                           c.rope_theta));
  }
  for (float f : c.rope_inv_freq) {
    if (!(f > 0) || !std::isfinite(f)) {
      return bad(fmt::format("RoPE frequency {} is not a finite positive number (check the "
                             "RoPE scaling parameters)", f));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> config_from_gguf(const GgufFile& gguf) {
  const std::string& origin = gguf.path();
  ModelConfig c;
  LAGSERVE_ASSIGN_OR_RETURN(c.arch_name, gguf.get_string("general.architecture"));
  LAGSERVE_ASSIGN_OR_RETURN(c.arch, arch_from_name(c.arch_name, origin));
  const std::string p = c.arch_name + ".";
  auto get_int = [&](const std::string& key) { return gguf.get_int(p + key); };
  LAGSERVE_ASSIGN_OR_RETURN(int64_t n_layers, get_int("block_count"));
  LAGSERVE_ASSIGN_OR_RETURN(int64_t d_model, get_int("embedding_length"));
  LAGSERVE_ASSIGN_OR_RETURN(int64_t d_ff, get_int("feed_forward_length"));
  LAGSERVE_ASSIGN_OR_RETURN(int64_t n_heads, get_int("attention.head_count"));
  auto narrow = [&](int64_t v, const char* key) { return to_i32(v, p + key, origin); };
  LAGSERVE_ASSIGN_OR_RETURN(c.n_layers, narrow(n_layers, "block_count"));
  LAGSERVE_ASSIGN_OR_RETURN(c.d_model, narrow(d_model, "embedding_length"));
  LAGSERVE_ASSIGN_OR_RETURN(c.d_ff, narrow(d_ff, "feed_forward_length"));
  LAGSERVE_ASSIGN_OR_RETURN(c.n_heads, narrow(n_heads, "attention.head_count"));
  LAGSERVE_ASSIGN_OR_RETURN(
      c.n_kv_heads,
      narrow(get_int("attention.head_count_kv").value_or(n_heads), "attention.head_count_kv"));
  c.head_dim = c.n_heads > 0 ? c.d_model / c.n_heads : 0;
  if (auto kl = get_int("attention.key_length"); kl.ok()) {
    LAGSERVE_ASSIGN_OR_RETURN(c.head_dim, narrow(*kl, "attention.key_length"));
  }
  LAGSERVE_ASSIGN_OR_RETURN(c.max_positions,
                            narrow(get_int("context_length").value_or(4096), "context_length"));
  c.rms_eps = to_f32(gguf.get_float(p + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_theta = to_f32(gguf.get_float(p + "rope.freq_base").value_or(10000.0));
  if (auto v = get_int("vocab_size"); v.ok()) {
    LAGSERVE_ASSIGN_OR_RETURN(c.vocab_size, narrow(*v, "vocab_size"));
  } else if (const GgufValue* tokens = gguf.find("tokenizer.ggml.tokens");
             tokens && tokens->as_array()) {
    LAGSERVE_ASSIGN_OR_RETURN(
        c.vocab_size, to_i32(static_cast<int64_t>(tokens->as_array()->values.size()),
                             "tokenizer.ggml.tokens (length)", origin));
  }
  c.qkv_bias = architecture_spec(c.arch).qkv_bias;
  c.tied_embeddings = gguf.find_tensor("output.weight") == nullptr;
  if (rope_table_possible(c.head_dim)) {
    c.rope_inv_freq = rope_inv_freq_base(c.rope_theta, c.head_dim);
  }
  if (auto dim = get_int("rope.dimension_count"); dim.ok() && *dim != c.head_dim) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: partial RoPE (rope.dimension_count {} != head_dim {}) is not supported",
        origin, *dim, c.head_dim));
  }
  if (auto type = gguf.get_string(p + "rope.scaling.type"); type.ok() && *type != "none") {
    const double factor = gguf.get_float(p + "rope.scaling.factor").value_or(1.0);
    if (*type == "linear") {
      for (float& f : c.rope_inv_freq) f = to_f32(f / factor);
    } else {
      return absl::InvalidArgumentError(
          fmt::format("{}: RoPE scaling '{}' is not supported", origin, *type));
    }
  }
  LAGSERVE_RETURN_IF_ERROR(config_validate(c, origin));
  return c;
}

absl::StatusOr<ModelConfig> config_from_hf_json(const std::string& json_text,
                                                const std::string& origin) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(fmt::format("{}: not a JSON object", origin));
  }
  auto get_i = [&](const char* key, int64_t def) -> int64_t {
    auto it = j.find(key);
    return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : def;
  };
  auto get_f = [&](const nlohmann::json& obj, const char* key, double def) -> double {
    auto it = obj.find(key);
    return it != obj.end() && it->is_number() ? it->get<double>() : def;
  };
  ModelConfig c;
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string()) {
    return absl::InvalidArgumentError(fmt::format("{}: missing \"model_type\"", origin));
  }
  c.arch_name = mt->get<std::string>();
  LAGSERVE_ASSIGN_OR_RETURN(c.arch, arch_from_name(c.arch_name, origin));
  if (auto sw = j.find("sliding_window"); c.arch_name == "mistral" && sw != j.end() &&
                                          !sw->is_null()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: Mistral with a sliding window is not supported", origin));
  }
  auto narrow = [&](const char* key, int64_t def) { return to_i32(get_i(key, def), key, origin); };
  LAGSERVE_ASSIGN_OR_RETURN(c.n_layers, narrow("num_hidden_layers", 0));
  LAGSERVE_ASSIGN_OR_RETURN(c.d_model, narrow("hidden_size", 0));
  LAGSERVE_ASSIGN_OR_RETURN(c.d_ff, narrow("intermediate_size", 0));
  LAGSERVE_ASSIGN_OR_RETURN(c.n_heads, narrow("num_attention_heads", 0));
  LAGSERVE_ASSIGN_OR_RETURN(c.n_kv_heads, narrow("num_key_value_heads", c.n_heads));
  LAGSERVE_ASSIGN_OR_RETURN(c.head_dim,
                            narrow("head_dim", c.n_heads > 0 ? c.d_model / c.n_heads : 0));
  LAGSERVE_ASSIGN_OR_RETURN(c.vocab_size, narrow("vocab_size", 0));
  LAGSERVE_ASSIGN_OR_RETURN(c.max_positions, narrow("max_position_embeddings", 4096));
  c.rms_eps = to_f32(get_f(j, "rms_norm_eps", 1e-6));
  c.rope_theta = to_f32(get_f(j, "rope_theta", 10000.0));
  c.qkv_bias = architecture_spec(c.arch).qkv_bias;
  auto tie = j.find("tie_word_embeddings");
  c.tied_embeddings = tie != j.end() && tie->is_boolean() ? tie->get<bool>() : false;
  if (rope_table_possible(c.head_dim)) {
    c.rope_inv_freq = rope_inv_freq_base(c.rope_theta, c.head_dim);
  }
  // Newer transformers nest theta and scaling under rope_parameters.
  const nlohmann::json* scaling = nullptr;
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) scaling = &*it;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    scaling = &*it;
    if (it->contains("rope_theta")) {
      c.rope_theta = to_f32(get_f(*it, "rope_theta", c.rope_theta));
      if (rope_table_possible(c.head_dim)) {
        c.rope_inv_freq = rope_inv_freq_base(c.rope_theta, c.head_dim);
      }
    }
  }
  if (scaling) {
    // json::value would throw on a non-string type; such a type is unknown.
    auto get_s = [&](const char* key, const std::string& def) -> std::string {
      auto it = scaling->find(key);
      if (it == scaling->end()) return def;
      return it->is_string() ? it->get<std::string>() : it->dump();
    };
    std::string type = get_s("rope_type", get_s("type", "default"));
    const double factor = get_f(*scaling, "factor", 1.0);
    if (type == "llama3") {
      rope_apply_llama3(c.rope_inv_freq, to_f32(factor),
                        to_f32(get_f(*scaling, "low_freq_factor", 1.0)),
                        to_f32(get_f(*scaling, "high_freq_factor", 4.0)),
                        to_f32(get_f(*scaling, "original_max_position_embeddings", 8192)));
    } else if (type == "linear") {
      for (float& f : c.rope_inv_freq) f = to_f32(f / factor);
    } else if (type != "default") {
      return absl::InvalidArgumentError(
          fmt::format("{}: RoPE scaling '{}' is not supported", origin, type));
    }
  }
  LAGSERVE_RETURN_IF_ERROR(config_validate(c, origin));
  return c;
}

}  // namespace lagserve::model
