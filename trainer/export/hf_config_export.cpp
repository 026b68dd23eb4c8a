// hf_config_json / hf_generation_config_json: ModelConfig back to Hugging Face
// JSON, checked by parsing the result with the engine's own config reader.
#include "trainer/export/hf_config_export.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numbers>
#include <filesystem>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/common/status_macros.h"
#include "trainer/export/file_io.h"

namespace lagserve::trainer {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// The base folder's RoPE scaling object, as "rope_scaling" wants it (no
// rope_theta inside, "rope_type" rather than the old "type"); nullopt when
// the base is not a folder or names none.
std::optional<Json> base_rope_scaling(const model::Model& base) {
  std::error_code ec;
  if (!fs::is_directory(base.source, ec)) return std::nullopt;
  absl::StatusOr<std::string> text = read_text_file((fs::path(base.source) / "config.json").string());
  if (!text.ok()) return std::nullopt;
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  const Json* src = nullptr;  // the loader's precedence: rope_parameters wins
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) src = &*it;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) src = &*it;
  if (src == nullptr) return std::nullopt;
  Json out = Json::object();
  for (const auto& [key, value] : src->items()) {
    if (key == "rope_theta") continue;
    out[key == "type" ? "rope_type" : key] = value;
  }
  return out;
}

Json llama3_scaling(double factor, double original_max, double high_freq_factor = 4.0) {
  Json j = {{"rope_type", "llama3"},
            {"factor", factor},
            {"low_freq_factor", 1.0},
            {"high_freq_factor", high_freq_factor}};
  if (original_max == std::round(original_max)) {
    j["original_max_position_embeddings"] = static_cast<int64_t>(original_max);
  } else {
    j["original_max_position_embeddings"] = original_max;
  }
  return j;
}

// llama3 scaling parameters that reproduce `inv` from `base` (the table
// without scaling), when the ratios inv/base look like one: 1 at high
// frequencies, 1/factor at low ones, a blend linear in 1/wavelength between.
// The blend fixes only the ratios of original_max_position_embeddings to the
// two freq factors, so low_freq_factor is taken as 1. nullopt if no fit.
std::optional<Json> fit_llama3_scaling(const std::vector<float>& inv,
                                       const std::vector<float>& base) {
  if (inv.empty() || inv.size() != base.size()) return std::nullopt;
  double min_ratio = 1;
  for (size_t i = 0; i < inv.size(); ++i) {
    min_ratio = std::min(min_ratio, static_cast<double>(inv[i]) / base[i]);
  }
  if (min_ratio > 1 - 1e-6 || min_ratio <= 0) return std::nullopt;
  const auto near = [](double a, double b) { return std::abs(a - b) <= 1e-6 * std::abs(b); };
  double keep_wavelen_max = 0, scaled_wavelen_min = INFINITY;
  std::vector<std::pair<double, double>> blend;  // (1 / wavelength, smooth)
  for (size_t i = 0; i < inv.size(); ++i) {
    const double ratio = static_cast<double>(inv[i]) / base[i];
    const double wavelen = 2 * std::numbers::pi / base[i];
    if (near(ratio, 1)) {
      keep_wavelen_max = std::max(keep_wavelen_max, wavelen);
    } else if (near(ratio, min_ratio)) {
      scaled_wavelen_min = std::min(scaled_wavelen_min, wavelen);
    } else if (ratio > min_ratio && ratio < 1) {
      blend.emplace_back(1 / wavelen, (ratio - min_ratio) / (1 - min_ratio));
    } else {
      return std::nullopt;
    }
  }
  // smooth = (orig / wavelen - low) / (high - low), with low = 1.
  double high = 4, orig = 0;
  if (blend.size() >= 2) {
    const auto [x0, s0] = blend.front();
    const auto [x1, s1] = blend.back();
    const double slope = (s1 - s0) / (x1 - x0), intercept = s0 - slope * x0;
    if (!(intercept < 0)) return std::nullopt;
    high = 1 - 1 / intercept;
    orig = slope * (high - 1);
  } else if (blend.size() == 1) {
    orig = (blend[0].second * (high - 1) + 1) / blend[0].first;
  } else if (scaled_wavelen_min < INFINITY) {
    orig = scaled_wavelen_min * (1 - 1e-3);  // just below the first scaled wavelength
    if (keep_wavelen_max > 0) high = orig / (keep_wavelen_max * (1 + 1e-3));
    if (!(high > 1)) return std::nullopt;
  }
  if (!(orig > 0) || !std::isfinite(orig) || !std::isfinite(high)) return std::nullopt;
  // Fitted numbers near round ones are taken as those (the check that follows
  // decides whether the result is close enough).
  const auto tidy = [](double v, double rel) {
    return std::abs(v - std::round(v)) <= rel * std::abs(v) ? std::round(v) : v;
  };
  return llama3_scaling(tidy(1 / min_ratio, 1e-5), tidy(orig, 1e-3), tidy(high, 1e-5));
}

Json base_config(const model::Model& base, bool tied, SaveDtype dtype,
                 const kv::LagPolicy& policy) {
  const model::ModelConfig& c = base.config;
  const bool qwen2 = c.arch == model::Arch::Qwen2;
  Json j;
  j["architectures"] = Json::array({qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"});
  j["model_type"] = qwen2 ? "qwen2" : "llama";
  if (qwen2) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  } else {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.d_ff;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_positions;
  j["rms_norm_eps"] = float_for_json(c.rms_eps);
  j["rope_theta"] = float_for_json(c.rope_theta);
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = tied;
  const auto id_or_null = [](std::optional<int32_t> id) { return id ? Json(*id) : Json(nullptr); };
  j["bos_token_id"] = base.tokenizer ? id_or_null(base.tokenizer->bos_id()) : Json(nullptr);
  j["eos_token_id"] = base.tokenizer ? id_or_null(base.tokenizer->eos_id()) : Json(nullptr);
  j["torch_dtype"] = dtype == SaveDtype::F32 ? "float32" : "bfloat16";
  j["use_cache"] = true;
  j["lagkv"] = Json::parse(kv::lag_policy_to_config_json(policy));
  return j;
}

// Largest |a - b| / |b| over the table; infinity when the sizes differ.
double rope_mismatch(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / std::abs(b[i]));
  }
  return worst;
}

}  // namespace

double float_for_json(float value) {
  const std::string text = fmt::format("{}", value);
  const double d = std::strtod(text.c_str(), nullptr);
  return static_cast<float>(d) == value ? d : static_cast<double>(value);
}

absl::StatusOr<std::string> hf_config_json(const model::Model& base, bool tied, SaveDtype dtype,
                                           const kv::LagPolicy& policy) {
  const model::ModelConfig& c = base.config;
  std::vector<std::optional<Json>> candidates = {std::nullopt};
  if (std::optional<Json> own = base_rope_scaling(base)) candidates.push_back(std::move(own));
  if (!c.rope_inv_freq.empty() && c.rope_inv_freq[0] != 1.0f && c.rope_inv_freq[0] > 0) {
    candidates.push_back(
        Json{{"rope_type", "linear"}, {"factor", float_for_json(1.0f / c.rope_inv_freq[0])}});
  }
  candidates.push_back(llama3_scaling(8.0, 8192.0));   // Llama 3.1
  candidates.push_back(llama3_scaling(32.0, 8192.0));  // Llama 3.2
  if (auto fit = fit_llama3_scaling(c.rope_inv_freq,
                                    model::rope_inv_freq_base(c.rope_theta, c.head_dim))) {
    candidates.push_back(std::move(fit));
  }

  // NOTE: an exact match is preferred; failing that, one within 1e-6
  // relative is accepted, because Llama-3.1 GGUFs store the llama3 scaling as
  // fp32 per-frequency divisors (rope_freqs) that differ from the formula by
  // an ulp or so.
  std::optional<Json> close;
  for (const std::optional<Json>& scaling : candidates) {
    Json j = base_config(base, tied, dtype, policy);
    if (scaling) j["rope_scaling"] = *scaling;
    const std::string text = j.dump(2);
    absl::StatusOr<model::ModelConfig> back = model::config_from_hf_json(text, "config.json");
    if (!back.ok() && !scaling) {
      return absl::InternalError(fmt::format("{}: the exported config.json does not read back: {}",
                                             base.source, std::string(back.status().message())));
    }
    if (!back.ok()) continue;  // e.g. a base scaling type the reader rejects
    const double mismatch = rope_mismatch(back->rope_inv_freq, c.rope_inv_freq);
    if (mismatch == 0) return text + "\n";
    if (mismatch <= 1e-6 && !close) close = std::move(j);
  }
  if (close) return close->dump(2) + "\n";
  return absl::UnimplementedError(fmt::format(
      "{}: the model's RoPE frequencies (theta {}, head_dim {}) carry a scaling that "
      "config.json cannot express (tried none, the base config's own, linear, the "
      "Llama-3.1/3.2 llama3 presets and a llama3 fit)",
      base.source, c.rope_theta, c.head_dim));
}

absl::StatusOr<std::string> hf_generation_config_json(const model::Model& base) {
  std::error_code ec;
  const fs::path own = fs::path(base.source) / "generation_config.json";
  if (fs::is_directory(base.source, ec) && fs::exists(own, ec)) {
    return read_text_file(own.string());
  }
  Json j = Json::object();
  if (base.tokenizer) {
    if (auto bos = base.tokenizer->bos_id()) j["bos_token_id"] = *bos;
    std::vector<int32_t> stops;
    if (auto eos = base.tokenizer->eos_id()) stops.push_back(*eos);
    for (int32_t id : base.tokenizer->stop_ids()) {
      if (std::find(stops.begin(), stops.end(), id) == stops.end()) stops.push_back(id);
    }
    if (stops.size() == 1) j["eos_token_id"] = stops[0];
    if (stops.size() > 1) j["eos_token_id"] = stops;
  }
  return j.dump(2) + "\n";
}

}  // namespace lagserve::trainer
