// export_hf: unfuses ModelWeights into Hugging Face tensors (the inverse of the
// loader's HF path) and writes them with config, generation and tokenizer files.
#include "trainer/export/hf_export.h"

#include <filesystem>

#include <fmt/format.h>

#include "engine/common/status_macros.h"
#include "trainer/export/file_io.h"
#include "trainer/export/hf_config_export.h"
#include "trainer/export/hf_tokenizer_export.h"

namespace lagserve::trainer {
namespace {

namespace fs = std::filesystem;

absl::Status check_size(const std::string& dir, const std::string& what,
                        const std::vector<float>& v, int64_t want) {
  if (static_cast<int64_t>(v.size()) == want) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format(
      "{}: cannot export: {} has {} floats but the model config needs {}", dir, what, v.size(),
      want));
}

absl::Status check_weights(const std::string& dir, const model::ModelConfig& c,
                           const model::ModelWeights& w) {
  const int64_t d = c.d_model, q = c.q_dim(), kv = c.kv_dim(), ff = c.d_ff, V = c.vocab_size;
  LAGSERVE_RETURN_IF_ERROR(check_size(dir, "tok_embd", w.tok_embd, V * d));
  LAGSERVE_RETURN_IF_ERROR(check_size(dir, "out_norm", w.out_norm, d));
  if (!w.output.empty()) LAGSERVE_RETURN_IF_ERROR(check_size(dir, "output", w.output, V * d));
  if (static_cast<int32_t>(w.layers.size()) != c.n_layers) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: cannot export: {} layers of weights but the model config has {}", dir,
        w.layers.size(), c.n_layers));
  }
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const model::LayerWeights& L = w.layers[l];
    auto check = [&](const char* name, const std::vector<float>& v, int64_t want) {
      return check_size(dir, fmt::format("layer {} {}", l, name), v, want);
    };
    LAGSERVE_RETURN_IF_ERROR(check("attn_norm", L.attn_norm, d));
    LAGSERVE_RETURN_IF_ERROR(check("wqkv", L.wqkv, (q + 2 * kv) * d));
    LAGSERVE_RETURN_IF_ERROR(check("bqkv", L.bqkv, c.qkv_bias ? q + 2 * kv : 0));
    LAGSERVE_RETURN_IF_ERROR(check("wo", L.wo, d * q));
    LAGSERVE_RETURN_IF_ERROR(check("ffn_norm", L.ffn_norm, d));
    LAGSERVE_RETURN_IF_ERROR(check("w_gate_up", L.w_gate_up, 2 * ff * d));
    LAGSERVE_RETURN_IF_ERROR(check("w_down", L.w_down, d * ff));
  }
  return absl::OkStatus();
}

absl::Status check_policy(const std::string& dir, const model::ModelConfig& c,
                          const kv::LagPolicy& policy) {
  if (!policy.enabled) return absl::OkStatus();
  if (absl::Status st = policy.validate(); !st.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: cannot export the policy: {}", dir, std::string(st.message())));
  }
  for (int32_t layer : policy.skip_layers) {
    if (layer < 0 || layer >= c.n_layers) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: cannot export the policy: skip_layers names layer {} but the model has {} layers",
          dir, layer, c.n_layers));
    }
  }
  return absl::OkStatus();
}

// The HF tensors, viewing `w` in place: the fused matrices are row blocks
// (q rows, then k, then v; gate rows, then up), so each part is a subspan.
// NOTE: no Q/K row permutation is undone here: the loader permutes only GGUF
// Llama weights, and ModelWeights is always in the HF half-split order.
std::vector<TensorView> hf_tensors(const model::ModelConfig& c, const model::ModelWeights& w) {
  const int64_t d = c.d_model, q = c.q_dim(), kv = c.kv_dim(), ff = c.d_ff, V = c.vocab_size;
  std::vector<TensorView> out;
  out.push_back({"model.embed_tokens.weight", {V, d}, w.tok_embd});
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const model::LayerWeights& L = w.layers[l];
    const std::string p = fmt::format("model.layers.{}.", l);
    const std::span<const float> wqkv(L.wqkv), gate_up(L.w_gate_up);
    out.push_back({p + "input_layernorm.weight", {d}, L.attn_norm});
    out.push_back({p + "self_attn.q_proj.weight", {q, d}, wqkv.subspan(0, q * d)});
    out.push_back({p + "self_attn.k_proj.weight", {kv, d}, wqkv.subspan(q * d, kv * d)});
    out.push_back({p + "self_attn.v_proj.weight", {kv, d}, wqkv.subspan((q + kv) * d, kv * d)});
    if (c.qkv_bias) {
      const std::span<const float> b(L.bqkv);
      out.push_back({p + "self_attn.q_proj.bias", {q}, b.subspan(0, q)});
      out.push_back({p + "self_attn.k_proj.bias", {kv}, b.subspan(q, kv)});
      out.push_back({p + "self_attn.v_proj.bias", {kv}, b.subspan(q + kv, kv)});
    }
    out.push_back({p + "self_attn.o_proj.weight", {d, q}, L.wo});
    out.push_back({p + "post_attention_layernorm.weight", {d}, L.ffn_norm});
    out.push_back({p + "mlp.gate_proj.weight", {ff, d}, gate_up.subspan(0, ff * d)});
    out.push_back({p + "mlp.up_proj.weight", {ff, d}, gate_up.subspan(ff * d, ff * d)});
    out.push_back({p + "mlp.down_proj.weight", {d, ff}, L.w_down});
  }
  out.push_back({"model.norm.weight", {d}, w.out_norm});
  if (!w.output.empty()) out.push_back({"lm_head.weight", {V, d}, w.output});
  return out;
}

}  // namespace

absl::Status export_hf(const std::string& dir, const model::Model& base,
                       const model::ModelWeights& weights, const kv::LagPolicy& policy,
                       const ExportOptions& options) {
  const model::ModelConfig& c = base.config;
  LAGSERVE_RETURN_IF_ERROR(check_weights(dir, c, weights));
  LAGSERVE_RETURN_IF_ERROR(check_policy(dir, c, policy));
  // Everything that can fail on the model's side is built before the first
  // file is written.
  const bool tied = weights.output.empty();
  LAGSERVE_ASSIGN_OR_RETURN(std::string config, hf_config_json(base, tied, options.dtype, policy));
  LAGSERVE_ASSIGN_OR_RETURN(std::string generation, hf_generation_config_json(base));
  LAGSERVE_ASSIGN_OR_RETURN(HfTokenizerFiles tokenizer, hf_tokenizer_files(base));

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    return absl::InternalError(fmt::format("{}: cannot create the directory: {}", dir,
                                           ec ? ec.message() : "not a directory"));
  }
  const fs::path out(dir);
  const std::vector<TensorView> tensors = hf_tensors(c, weights);
  LAGSERVE_RETURN_IF_ERROR(write_safetensors((out / "model.safetensors").string(), tensors,
                                             options.dtype, {{"format", "pt"}}));
  // A stale index would make readers look for shards instead of the new file.
  fs::remove(out / "model.safetensors.index.json", ec);
  LAGSERVE_RETURN_IF_ERROR(write_text_file((out / "config.json").string(), config));
  LAGSERVE_RETURN_IF_ERROR(write_text_file((out / "generation_config.json").string(), generation));
  LAGSERVE_RETURN_IF_ERROR(
      write_text_file((out / "tokenizer.json").string(), tokenizer.tokenizer_json));
  LAGSERVE_RETURN_IF_ERROR(
      write_text_file((out / "tokenizer_config.json").string(), tokenizer.tokenizer_config_json));
  return write_text_file((out / "special_tokens_map.json").string(),
                         tokenizer.special_tokens_map_json);
}

}  // namespace lagserve::trainer
