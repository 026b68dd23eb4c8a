// load_model: reads GGUF or Hugging Face weights into the fused fp32 layout of
// ModelWeights, checking every tensor's presence and shape.
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "engine/common/status_macros.h"
#include "engine/model/architectures/architecture.h"
#include "engine/model/gguf.h"
#include "engine/model/model.h"
#include "engine/model/safetensors.h"

namespace lagserve::model {
namespace {

namespace fs = std::filesystem;

// The tensors of a layer and of the model, named per format.
enum class Slot { AttnNorm, Q, K, V, QBias, KBias, VBias, O, FfnNorm, Gate, Up, Down };

std::string gguf_name(Slot s, int layer) {
  static const char* kNames[] = {"attn_norm.weight", "attn_q.weight",   "attn_k.weight",
                                 "attn_v.weight",    "attn_q.bias",     "attn_k.bias",
                                 "attn_v.bias",      "attn_output.weight", "ffn_norm.weight",
                                 "ffn_gate.weight",  "ffn_up.weight",   "ffn_down.weight"};
  return fmt::format("blk.{}.{}", layer, kNames[static_cast<int>(s)]);
}

std::string hf_name(Slot s, int layer) {
  static const char* kNames[] = {
      "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
      "self_attn.v_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.bias",
      "self_attn.v_proj.bias", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
      "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
  return fmt::format("model.layers.{}.{}", layer, kNames[static_cast<int>(s)]);
}

// Reads named tensors of either format as fp32 in PyTorch order [rows, cols].
class WeightReader {
 public:
  virtual ~WeightReader() = default;
  virtual std::string name(Slot s, int layer) const = 0;
  virtual std::string embd_name() const = 0;
  virtual std::string norm_name() const = 0;
  virtual std::string output_name() const = 0;
  virtual bool has(const std::string& name) const = 0;
  // Reads `name` into dst, which it resizes; error if missing or shaped other
  // than `shape`.
  virtual absl::Status read(const std::string& name, const std::vector<int64_t>& shape,
                            std::vector<float>& dst) const = 0;
  virtual const std::string& origin() const = 0;

 protected:
  absl::Status shape_error(const std::string& name, const std::vector<int64_t>& got,
                           const std::vector<int64_t>& want) const {
    return absl::InvalidArgumentError(fmt::format("{}: tensor '{}' has shape [{}], expected [{}]",
                                                  origin(), name, fmt::join(got, ", "),
                                                  fmt::join(want, ", ")));
  }
  absl::Status missing(const std::string& name) const {
    return absl::InvalidArgumentError(fmt::format("{}: missing tensor '{}'", origin(), name));
  }
  // NaN or infinite weights are refused at load, naming the tensor and the
  // first bad element (llama.cpp's --check-tensors, always on here: the scan
  // costs little next to reading and dequantizing; see docs/reliability.md).
  absl::Status check_finite(const std::string& name, const std::vector<float>& w) const {
    constexpr size_t kChunk = 4096;
    for (size_t begin = 0; begin < w.size(); begin += kChunk) {
      const size_t end = std::min(w.size(), begin + kChunk);
      // Branch-free over the chunk so that it vectorizes: NaN and infinity
      // are the floats whose exponent bits are all ones.
      uint32_t bad = 0;
      for (size_t i = begin; i < end; ++i) {
        bad |= (~std::bit_cast<uint32_t>(w[i]) & 0x7f800000u) == 0;
      }
      if (bad == 0) continue;
      for (size_t i = begin; i < end; ++i) {
        if (!std::isfinite(w[i])) {
          return absl::InvalidArgumentError(fmt::format(
              "{}: tensor '{}' has {} at element {} (of {}): the weights are corrupt", origin(),
              name, std::isnan(w[i]) ? "a NaN" : "an infinity", i, w.size()));
        }
      }
    }
    return absl::OkStatus();
  }
};

class GgufReader final : public WeightReader {
 public:
  explicit GgufReader(const GgufFile& f) : f_(f) {}
  std::string name(Slot s, int layer) const override { return gguf_name(s, layer); }
  std::string embd_name() const override { return "token_embd.weight"; }
  std::string norm_name() const override { return "output_norm.weight"; }
  std::string output_name() const override { return "output.weight"; }
  bool has(const std::string& name) const override { return f_.find_tensor(name) != nullptr; }
  const std::string& origin() const override { return f_.path(); }
  absl::Status read(const std::string& name, const std::vector<int64_t>& shape,
                    std::vector<float>& dst) const override {
    const GgufTensorInfo* t = f_.find_tensor(name);
    if (!t) return missing(name);
    std::vector<int64_t> got(t->dims.rbegin(), t->dims.rend());  // ggml order is reversed
    if (got != shape) return shape_error(name, got, shape);
    dst.resize(t->n_elements());
    ggml_dequantize(t->type, t->data, dst.data(), t->n_elements());
    return check_finite(name, dst);
  }

 private:
  const GgufFile& f_;
};

class SafetensorsReader final : public WeightReader {
 public:
  SafetensorsReader(const SafetensorsModel& m, std::string origin)
      : m_(m), origin_(std::move(origin)) {}
  std::string name(Slot s, int layer) const override { return hf_name(s, layer); }
  std::string embd_name() const override { return "model.embed_tokens.weight"; }
  std::string norm_name() const override { return "model.norm.weight"; }
  std::string output_name() const override { return "lm_head.weight"; }
  bool has(const std::string& name) const override { return m_.find(name) != nullptr; }
  const std::string& origin() const override { return origin_; }
  absl::Status read(const std::string& name, const std::vector<int64_t>& shape,
                    std::vector<float>& dst) const override {
    const StTensor* t = m_.find(name);
    if (!t) return missing(name);
    if (t->shape != shape) return shape_error(name, t->shape, shape);
    dst.resize(t->n_elements());
    st_to_f32(*t, dst.data());
    return check_finite(name, dst);
  }

 private:
  const SafetensorsModel& m_;
  std::string origin_;
};

// llama.cpp stores Q/K rows of each head interleaved ([i0, i0', i1, i1', ...]
// where i' = i + head_dim/2); restore the Hugging Face half-split order.
void unpermute_qk_rows(std::vector<float>& w, int32_t n_heads, int32_t head_dim, int32_t cols) {
  std::vector<float> head(static_cast<size_t>(head_dim) * cols);
  const int32_t half = head_dim / 2;
  for (int32_t h = 0; h < n_heads; ++h) {
    float* base = w.data() + static_cast<size_t>(h) * head_dim * cols;
    std::copy(base, base + head.size(), head.begin());
    for (int32_t i = 0; i < half; ++i) {
      for (int32_t j = 0; j < 2; ++j) {
        const float* src = head.data() + static_cast<size_t>(2 * i + j) * cols;
        std::copy(src, src + cols, base + static_cast<size_t>(j * half + i) * cols);
      }
    }
  }
}

void append(std::vector<float>& dst, const std::vector<float>& src) {
  dst.insert(dst.end(), src.begin(), src.end());
}

absl::Status load_weights(const WeightReader& r, const ModelConfig& c, bool qk_permuted,
                          ModelWeights& w) {
  const int64_t d = c.d_model, q = c.q_dim(), kv = c.kv_dim(), ff = c.d_ff, V = c.vocab_size;
  LAGSERVE_RETURN_IF_ERROR(r.read(r.embd_name(), {V, d}, w.tok_embd));
  LAGSERVE_RETURN_IF_ERROR(r.read(r.norm_name(), {d}, w.out_norm));
  if (!c.tied_embeddings) LAGSERVE_RETURN_IF_ERROR(r.read(r.output_name(), {V, d}, w.output));
  std::vector<float> a, b, bias;
  // NOTE: layers are added as their tensors are read, never all at once: a
  // corrupt layer count fails at the first missing layer without allocating.
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights& L = w.layers.emplace_back();
    auto rd = [&](Slot s, std::vector<int64_t> shape, std::vector<float>& dst) {
      return r.read(r.name(s, l), shape, dst);
    };
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::AttnNorm, {d}, L.attn_norm));
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::Q, {q, d}, a));
    if (qk_permuted) unpermute_qk_rows(a, c.n_heads, c.head_dim, c.d_model);
    L.wqkv.reserve((q + 2 * kv) * d);
    append(L.wqkv, a);
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::K, {kv, d}, a));
    if (qk_permuted) unpermute_qk_rows(a, c.n_kv_heads, c.head_dim, c.d_model);
    append(L.wqkv, a);
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::V, {kv, d}, a));
    append(L.wqkv, a);
    if (c.qkv_bias) {
      LAGSERVE_RETURN_IF_ERROR(rd(Slot::QBias, {q}, bias));
      append(L.bqkv, bias);
      LAGSERVE_RETURN_IF_ERROR(rd(Slot::KBias, {kv}, bias));
      append(L.bqkv, bias);
      LAGSERVE_RETURN_IF_ERROR(rd(Slot::VBias, {kv}, bias));
      append(L.bqkv, bias);
    }
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::O, {d, q}, L.wo));
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::FfnNorm, {d}, L.ffn_norm));
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::Gate, {ff, d}, a));
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::Up, {ff, d}, b));
    L.w_gate_up.reserve(2 * ff * d);
    append(L.w_gate_up, a);
    append(L.w_gate_up, b);
    LAGSERVE_RETURN_IF_ERROR(rd(Slot::Down, {d, ff}, L.w_down));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open", p.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::unique_ptr<Model>> load_gguf(const std::string& path, const LoadOptions& opt) {
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> f, GgufFile::open(path));
  auto m = std::make_unique<Model>();
  m->source = path;
  LAGSERVE_ASSIGN_OR_RETURN(m->config, config_from_gguf(*f));
  // Llama-3.1 GGUFs carry RoPE scaling as per-frequency divisors.
  if (f->find_tensor("rope_freqs.weight")) {
    std::vector<float> factors;
    GgufReader r(*f);
    LAGSERVE_RETURN_IF_ERROR(
        r.read("rope_freqs.weight", {m->config.head_dim / 2}, factors));
    for (size_t i = 0; i < factors.size(); ++i) m->config.rope_inv_freq[i] /= factors[i];
    // A zero or negative factor leaves a frequency that is not usable.
    LAGSERVE_RETURN_IF_ERROR(config_validate(m->config, path));
  }
  LAGSERVE_ASSIGN_OR_RETURN(m->tokenizer, Tokenizer::from_gguf(*f));
  if (m->tokenizer->vocab_size() != m->config.vocab_size) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: tokenizer has {} tokens but the model's vocabulary is {}", path,
        m->tokenizer->vocab_size(), m->config.vocab_size));
  }
  m->chat_template = f->get_string("tokenizer.chat_template").value_or("");
  if (!opt.weights) return m;
  LAGSERVE_RETURN_IF_ERROR(load_weights(
      GgufReader(*f), m->config, architecture_spec(m->config.arch).gguf_qk_permuted, m->weights));
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> load_hf_dir(const fs::path& dir, const LoadOptions& opt) {
  auto m = std::make_unique<Model>();
  m->source = dir.string();
  LAGSERVE_ASSIGN_OR_RETURN(std::string config_text, read_text(dir / "config.json"));
  LAGSERVE_ASSIGN_OR_RETURN(m->config,
                            config_from_hf_json(config_text, (dir / "config.json").string()));
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsModel> st,
                            SafetensorsModel::open_dir(dir.string()));
  SafetensorsReader reader(*st, dir.string());
  // Some checkpoints omit lm_head and rely on the tie without saying so.
  if (!m->config.tied_embeddings && !reader.has("lm_head.weight")) m->config.tied_embeddings = true;
  const fs::path tok_config = dir / "tokenizer_config.json";
  LAGSERVE_ASSIGN_OR_RETURN(
      m->tokenizer, Tokenizer::from_tokenizer_json((dir / "tokenizer.json").string(),
                                                   fs::exists(tok_config) ? tok_config.string() : ""));
  if (m->tokenizer->vocab_size() > m->config.vocab_size) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: tokenizer has {} tokens but the model's vocabulary is {}", dir.string(),
        m->tokenizer->vocab_size(), m->config.vocab_size));
  }
  if (fs::exists(tok_config)) {
    LAGSERVE_ASSIGN_OR_RETURN(std::string text, read_text(tok_config));
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_object() && j.contains("chat_template")) {
      const auto& t = j["chat_template"];
      if (t.is_string()) {
        m->chat_template = t.get<std::string>();
      } else if (t.is_array()) {  // [{"name": "default", "template": ...}, ...]
        for (const auto& e : t) {
          if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
              e["template"].is_string()) {
            m->chat_template = e["template"].get<std::string>();
          }
        }
      }
    }
  }
  if (m->chat_template.empty() && fs::exists(dir / "chat_template.jinja")) {
    LAGSERVE_ASSIGN_OR_RETURN(m->chat_template, read_text(dir / "chat_template.jinja"));
  }
  if (!opt.weights) return m;
  LAGSERVE_RETURN_IF_ERROR(load_weights(reader, m->config, /*qk_permuted=*/false, m->weights));
  return m;
}

}  // namespace

absl::StatusOr<std::string> resolve_model_path(const std::string& path) {
  if (path != "default") return path;
  std::string cache;
  if (const char* c = std::getenv("LAGSERVE_CACHE"); c && *c) {
    cache = c;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    cache = std::string(x) + "/lagserve";
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    cache = std::string(h) + "/.cache/lagserve";
  }
  std::string p = cache + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(p)) {
    return absl::NotFoundError(fmt::format(
        "the default model is not at {}; fetch it with scripts/fetch_model.py", p));
  }
  return p;
}

absl::StatusOr<std::unique_ptr<Model>> load_model(const std::string& path_in,
                                                  const LoadOptions& options) {
  LAGSERVE_ASSIGN_OR_RETURN(std::string path, resolve_model_path(path_in));
  std::error_code ec;
  if (fs::is_directory(path, ec)) return load_hf_dir(path, options);
  if (!fs::exists(path, ec)) return absl::NotFoundError(fmt::format("{}: no such file", path));
  return load_gguf(path, options);
}

}  // namespace lagserve::model
