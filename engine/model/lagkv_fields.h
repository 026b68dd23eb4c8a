// The LagKV policy as a checkpoint records it: each field optional, plus the
// config.json form ("lagkv"). The policy itself (defaults, checks, meaning)
// is kv::LagPolicy; this layer only reads and writes the numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {

struct LagPolicyFields {
  std::optional<int32_t> sink, lag, keep;
  std::optional<double> ratio;  // keep = round(ratio * lag); not with keep
  std::optional<float> score_v_weight;
  std::optional<std::vector<int32_t>> skip_layers;  // any order; duplicates dropped
};

// A config.json "lagkv" value: false gives enabled = false; true, or an
// object (whose optional "enabled" may say false), gives the fields it names.
struct LagkvRecord {
  bool enabled = true;
  LagPolicyFields fields;
};

// Reads the optional "lagkv" member of a config.json document: nullopt when
// absent or null. Malformed JSON, unknown keys and wrong types are
// InvalidArgument naming the key.
absl::StatusOr<std::optional<LagkvRecord>> lagkv_from_config_json(const std::string& json_text);

// The JSON value to store as config.json's "lagkv": `false` when disabled,
// else an object with sink, lag, keep, score_v_weight and skip_layers.
std::string lagkv_to_config_json(bool enabled, int32_t sink, int32_t lag, int32_t keep,
                                 float score_v_weight, const std::vector<int32_t>& skip_layers);

}  // namespace lagserve::model
