// Checkpoints carry the policy (DESIGN.md section 1): LagPolicy from and to
// config.json's "lagkv" value, and from a GGUF file's lagkv.* metadata.
#include <fmt/format.h>

#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/kv/lag_policy.h"
#include "engine/model/gguf.h"

namespace lagserve::kv {
namespace {

using nlohmann::json;

absl::Status json_error(std::string_view key, std::string_view why) {
  return absl::InvalidArgumentError(fmt::format("config.json: lagkv.{}: {}", key, why));
}

absl::StatusOr<int32_t> json_int32(std::string_view key, const json& v) {
  if (!v.is_number_integer()) {
    return json_error(key, fmt::format("expected an integer, got {}", v.dump()));
  }
  const bool fits = v.is_number_unsigned()
                        ? v.get<uint64_t>() <= static_cast<uint64_t>(INT32_MAX)
                        : v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
  if (!fits) return json_error(key, fmt::format("{} does not fit int32", v.dump()));
  return static_cast<int32_t>(v.get<int64_t>());
}

absl::StatusOr<LagPolicy> policy_from_json_object(const json& obj) {
  LagPolicyFields f;
  bool enabled = true;
  for (const auto& [key, v] : obj.items()) {
    if (key == "enabled") {
      if (!v.is_boolean()) return json_error(key, fmt::format("expected a bool, got {}", v.dump()));
      enabled = v.get<bool>();
    } else if (key == "sink" || key == "lag" || key == "keep") {
      absl::StatusOr<int32_t> i = json_int32(key, v);
      if (!i.ok()) return i.status();
      (key == "sink" ? f.sink : key == "lag" ? f.lag : f.keep) = *i;
    } else if (key == "ratio") {
      if (!v.is_number()) return json_error(key, fmt::format("expected a number, got {}", v.dump()));
      f.ratio = v.get<double>();
    } else if (key == "score_v_weight") {
      if (!v.is_number()) return json_error(key, fmt::format("expected a number, got {}", v.dump()));
      f.score_v_weight = static_cast<float>(v.get<double>());
    } else if (key == "skip_layers") {
      if (!v.is_array()) {
        return json_error(key, fmt::format("expected an array of integers, got {}", v.dump()));
      }
      std::vector<int32_t> layers;
      for (const json& e : v) {
        absl::StatusOr<int32_t> i = json_int32(key, e);
        if (!i.ok()) return i.status();
        layers.push_back(*i);
      }
      f.skip_layers = std::move(layers);
    } else {
      return json_error(key,
                        "unknown key (known: enabled, sink, lag, keep, ratio, score_v_weight, "
                        "skip_layers)");
    }
  }
  if (!enabled) return LagPolicy{};
  absl::StatusOr<LagPolicy> p = LagPolicy::from_fields(f);
  if (!p.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("config.json: {}", std::string(p.status().message())));
  }
  return p;
}

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
  const json doc = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  if (!doc.is_object()) return absl::InvalidArgumentError("config.json: not a JSON object");
  const auto it = doc.find("lagkv");
  if (it == doc.end() || it->is_null()) return std::optional<LagPolicy>();
  if (it->is_boolean()) {
    if (!it->get<bool>()) return std::optional<LagPolicy>(LagPolicy{});
    absl::StatusOr<LagPolicy> p = LagPolicy::from_fields({});
    if (!p.ok()) return p.status();
    return std::optional<LagPolicy>(*std::move(p));
  }
  if (!it->is_object()) {
    return absl::InvalidArgumentError(fmt::format(
        "config.json: lagkv must be an object, true or false, got {}", it->dump()));
  }
  absl::StatusOr<LagPolicy> p = policy_from_json_object(*it);
  if (!p.ok()) return p.status();
  return std::optional<LagPolicy>(*std::move(p));
}

std::string lag_policy_to_config_json(const LagPolicy& policy) {
  if (!policy.enabled) return "false";
  // w goes through its shortest decimal form, so the file says 0.1 rather than
  // 0.10000000149011612, and reading it back as a double gives the same float.
  const std::string w_text = fmt::format("{}", policy.score_v_weight);
  double w = 0;
  std::from_chars(w_text.data(), w_text.data() + w_text.size(), w);
  nlohmann::ordered_json obj;
  obj["sink"] = policy.sink;
  obj["lag"] = policy.lag;
  obj["keep"] = policy.keep;
  obj["score_v_weight"] = w;
  obj["skip_layers"] = policy.skip_layers;
  return obj.dump();
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

}  // namespace lagserve::kv
