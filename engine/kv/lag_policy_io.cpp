// Checkpoints carry the policy (DESIGN.md section 1): LagPolicy from and to
// config.json's "lagkv" value (parsed by engine/model, which owns the JSON),
// and from a GGUF file's lagkv.* metadata.
#include <fmt/format.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/kv/lag_policy.h"
#include "engine/model/gguf.h"
#include "engine/model/lagkv_fields.h"
#include "engine/model/model.h"
#include "engine/common/status_macros.h"

namespace lagserve::kv {
namespace {

// Any GGUF lookup error, with the key, as InvalidArgument.
absl::Status gguf_error(const absl::Status& st) {
  return absl::InvalidArgumentError(std::string(st.message()));
}

absl::StatusOr<int32_t> gguf_int32(const model::GgufFile& g, const std::string& key) {
  absl::StatusOr<int64_t> v = g.get_int(key);
  if (!v.ok()) return gguf_error(v.status());
  if (*v < INT32_MIN || *v > INT32_MAX) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} = {} does not fit int32", g.path(), key, *v));
  }
  return static_cast<int32_t>(*v);
}

}  // namespace

absl::StatusOr<std::optional<LagPolicy>> lag_policy_from_config_json(
    const std::string& json_text) {
  absl::StatusOr<std::optional<model::LagkvRecord>> rec = model::lagkv_from_config_json(json_text);
  if (!rec.ok()) return rec.status();
  if (!rec->has_value()) return std::optional<LagPolicy>();
  if (!(*rec)->enabled) return std::optional<LagPolicy>(LagPolicy{});
  absl::StatusOr<LagPolicy> p = LagPolicy::from_fields((*rec)->fields);
  if (!p.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("config.json: {}", std::string(p.status().message())));
  }
  return std::optional<LagPolicy>(*std::move(p));
}

std::string lag_policy_to_config_json(const LagPolicy& policy) {
  return model::lagkv_to_config_json(policy.enabled, policy.sink, policy.lag, policy.keep,
                                     policy.score_v_weight, policy.skip_layers);
}

absl::StatusOr<std::optional<LagPolicy>> lag_policy_from_gguf(const model::GgufFile& gguf) {
  static constexpr std::string_view kPrefix = "lagkv.";
  bool any = false;
  for (const auto& [key, value] : gguf.metadata()) {
    if (!key.starts_with(kPrefix)) continue;
    any = true;
    const std::string_view name = std::string_view(key).substr(kPrefix.size());
    if (name != "enabled" && name != "sink" && name != "lag" && name != "keep" &&
        name != "ratio" && name != "score_v_weight" && name != "skip_layers") {
      return absl::InvalidArgumentError(fmt::format(
          "{}: unknown metadata key '{}' (known: lagkv.enabled, lagkv.sink, lagkv.lag, "
          "lagkv.keep, lagkv.ratio, lagkv.score_v_weight, lagkv.skip_layers)",
          gguf.path(), key));
    }
  }
  if (!any) return std::optional<LagPolicy>();

  if (gguf.find("lagkv.enabled") != nullptr) {
    absl::StatusOr<bool> enabled = gguf.get_bool("lagkv.enabled");
    if (!enabled.ok()) return gguf_error(enabled.status());
    if (!*enabled) return std::optional<LagPolicy>(LagPolicy{});
  }
  LagPolicyFields f;
  for (const char* name : {"lagkv.sink", "lagkv.lag", "lagkv.keep"}) {
    if (gguf.find(name) == nullptr) continue;
    absl::StatusOr<int32_t> v = gguf_int32(gguf, name);
    if (!v.ok()) return v.status();
    const std::string_view n(name);
    (n == "lagkv.sink" ? f.sink : n == "lagkv.lag" ? f.lag : f.keep) = *v;
  }
  if (gguf.find("lagkv.ratio") != nullptr) {
    absl::StatusOr<double> r = gguf.get_float("lagkv.ratio");
    if (!r.ok()) return gguf_error(r.status());
    f.ratio = *r;
  }
  if (gguf.find("lagkv.score_v_weight") != nullptr) {
    absl::StatusOr<double> w = gguf.get_float("lagkv.score_v_weight");
    if (!w.ok()) return gguf_error(w.status());
    f.score_v_weight = static_cast<float>(*w);
  }
  if (gguf.find("lagkv.skip_layers") != nullptr) {
    absl::StatusOr<std::vector<int64_t>> layers = gguf.get_int_array("lagkv.skip_layers");
    if (!layers.ok()) return gguf_error(layers.status());
    std::vector<int32_t> out;
    for (int64_t l : *layers) {
      if (l < 0 || l > INT32_MAX) {
        return absl::InvalidArgumentError(fmt::format(
            "{}: lagkv.skip_layers: {} is not a layer index", gguf.path(), l));
      }
      out.push_back(static_cast<int32_t>(l));
    }
    f.skip_layers = std::move(out);
  }
  absl::StatusOr<LagPolicy> p = LagPolicy::from_fields(f);
  if (!p.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {}", gguf.path(), std::string(p.status().message())));
  }
  return std::optional<LagPolicy>(*std::move(p));
}

absl::StatusOr<std::optional<LagPolicy>> lag_policy_from_model(const model::Model& model) {
  namespace fs = std::filesystem;
  if (fs::is_directory(model.source)) {
    std::ifstream in(fs::path(model.source) / "config.json");
    std::ostringstream ss;
    ss << in.rdbuf();
    return lag_policy_from_config_json(ss.str());
  }
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<model::GgufFile> f, model::GgufFile::open(model.source));
  return lag_policy_from_gguf(*f);
}

}  // namespace lagserve::kv
