// config.json's "lagkv" value, read into and written from plain fields.
#include "engine/model/lagkv_fields.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <charconv>
#include <climits>
#include <nlohmann/json.hpp>

namespace lagserve::model {
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

absl::StatusOr<LagkvRecord> record_from_json_object(const json& obj) {
  LagkvRecord rec;
  LagPolicyFields& f = rec.fields;
  bool& enabled = rec.enabled;
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
  return rec;
}

}  // namespace

absl::StatusOr<std::optional<LagkvRecord>> lagkv_from_config_json(const std::string& json_text) {
  const json doc = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("config.json: not valid JSON");
  if (!doc.is_object()) return absl::InvalidArgumentError("config.json: not a JSON object");
  const auto it = doc.find("lagkv");
  if (it == doc.end() || it->is_null()) return std::optional<LagkvRecord>();
  if (it->is_boolean()) return std::optional<LagkvRecord>(LagkvRecord{it->get<bool>(), {}});
  if (!it->is_object()) {
    return absl::InvalidArgumentError(fmt::format(
        "config.json: lagkv must be an object, true or false, got {}", it->dump()));
  }
  absl::StatusOr<LagkvRecord> rec = record_from_json_object(*it);
  if (!rec.ok()) return rec.status();
  return std::optional<LagkvRecord>(*std::move(rec));
}

std::string lagkv_to_config_json(bool enabled, int32_t sink, int32_t lag, int32_t keep,
                                 float score_v_weight, const std::vector<int32_t>& skip_layers) {
  if (!enabled) return "false";
  // w goes through its shortest decimal form, so the file says 0.1 rather than
  // 0.10000000149011612, and reading it back as a double gives the same float.
  const std::string w_text = fmt::format("{}", score_v_weight);
  double w = 0;
  std::from_chars(w_text.data(), w_text.data() + w_text.size(), w);
  nlohmann::ordered_json obj;
  obj["sink"] = sink;
  obj["lag"] = lag;
  obj["keep"] = keep;
  obj["score_v_weight"] = w;
  obj["skip_layers"] = skip_layers;
  return obj.dump();
}

}  // namespace lagserve::model
