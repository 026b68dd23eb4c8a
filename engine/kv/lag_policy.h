// LagPolicy: the one definition of the LagKV / LRSA cache policy (DESIGN.md
// section 1): parameters, partitions, visibility, cache contents, scoring and
// selection. Plain C++; the trainer's mask and the engine's cache both use it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/lagkv_fields.h"

namespace lagserve::model {
class GgufFile;
struct Model;
}  // namespace lagserve::model

namespace lagserve::kv {

// The fields of a policy as a spec, config.json or GGUF gives them, each
// optional; LagPolicy::from_fields applies the defaults and the checks that
// all three sources share.
using LagPolicyFields = model::LagPolicyFields;

struct LagPolicy {
  bool enabled = false;              // false: full attention everywhere ("off")
  int32_t sink = 16;                 // S: the first S positions are never evicted
  int32_t lag = 128;                 // L: partition size
  int32_t keep = 32;                 // k: kept per compressed partition, 1 <= k <= L
  float score_v_weight = 1.0f;       // w: score = score_K + w * score_V
  std::vector<int32_t> skip_layers;  // layers with a full cache; sorted, unique

  // The keep used when a spec gives lag but neither keep nor ratio:
  // max(1, lag / 4) (DESIGN.md's "L/4", floored, and at least one token).
  static int32_t default_keep(int32_t lag) { return lag / 4 > 1 ? lag / 4 : 1; }

  // Parses "off", "on" (every default) or comma-separated key=value pairs:
  //   sink=16,lag=128,keep=32,score_v_weight=1,skip_layers=0;1;5
  // Keys: sink, lag, keep, ratio (keep = round(ratio * lag), ratio in (0, 1];
  // not together with keep), score_v_weight (alias w), skip_layers (layer ids
  // separated by ';', since ',' separates pairs; empty for none). Missing keys
  // take their defaults (keep: default_keep(lag)). Whitespace around keys and
  // values is ignored. A non-"off" spec gives an enabled policy. Errors
  // (unknown or repeated key, bad number, keep > lag, lag < 1, sink < 0, ratio
  // out of range or keeping no token, negative w or layer) are InvalidArgument
  // naming the key.
  static absl::StatusOr<LagPolicy> parse(std::string_view spec);
  // An enabled policy from the given fields, defaults for the others; errors
  // as for parse, naming the field.
  static absl::StatusOr<LagPolicy> from_fields(const LagPolicyFields& fields);
  // "off" when disabled; otherwise every key (skip_layers only when non-empty),
  // with w written in its shortest round-tripping form: parse(to_string())
  // gives back an equal policy.
  std::string to_string() const;
  // OK, or InvalidArgument naming the first field out of range (the checks of
  // parse). Not checked when disabled.
  absl::Status validate() const;

  // enabled && layer is not in skip_layers.
  bool layer_compressed(int32_t layer) const;
  // c(t) = floor((t - S) / L). Precondition: t >= S.
  int32_t partition_of(int32_t t) const;
  // First position of partition p: S + p * L.
  int32_t partition_begin(int32_t p) const { return sink + p * lag; }
  // Complete partitions after n tokens: m = max(0, floor((n - S) / L)).
  int32_t complete_partitions(int32_t n) const;
  // Partitions compressed (selected) after n tokens: max(0, m - 1); 0 when disabled.
  int32_t compressed_partitions(int32_t n) const;
  // Cache entries a compressed layer holds after n tokens (DESIGN.md "Cache
  // contents"): n while m < 2, else S + (m-1)k + (n - S - (m-1)L). n when disabled.
  int32_t retained_len(int32_t n) const;

  friend bool operator==(const LagPolicy&, const LagPolicy&) = default;
};

// May the query at position t see the key at position j, in a compressed
// layer? j_selected says whether j is in Selected(c(j)); it is consulted only
// when j's partition is compressed from t's point of view (t >= S + 2L,
// j >= S, c(j) <= c(t) - 2). Causal: false for j > t. A disabled policy gives
// plain causal attention. Precondition: 0 <= j, 0 <= t.
bool lag_visible(const LagPolicy& p, int32_t t, int32_t j, bool j_selected);

// Scoring reference for one partition of one KV head (DESIGN.md "Scoring
// partition p"): cur_* are X over partition p, ref_* over partition p+1; each
// L rows of d floats, rows row_stride floats apart. Returns
// score[i] = softmax(s_K)[i] + w * softmax(s_V)[i], i in [0, L).
// NOTE: every quantity the formula names (min, max, nrm, s, softmax, score)
// is an fp32 value computed as written; only the sums inside the std and the
// softmax are accumulated in double, so this is the accurate side that
// kernels are compared with. Preconditions: d >= 2, L >= 1.
std::vector<float> lag_scores(const float* cur_k, const float* ref_k, const float* cur_v,
                              const float* ref_v, int32_t L, int32_t d, int64_t row_stride,
                              float score_v_weight);

// Selected(p): the offsets (0 .. size-1 within the partition) of the k highest
// scores, ties to the lower offset, returned ascending. Preconditions:
// 1 <= k <= scores.size(), no NaN.
std::vector<int32_t> lag_select(std::span<const float> scores, int32_t k);

// --- Checkpoints carry the policy (lag_policy_io.cpp) -----------------------

// Reads the optional "lagkv" member of a config.json document: absent or null
// gives nullopt, false gives a disabled policy, true the defaults, and an
// object {"sink", "lag", "keep" or "ratio", "score_v_weight", "skip_layers":
// [...], optionally "enabled": bool} an enabled policy (missing keys take
// their defaults). Malformed JSON, unknown keys, wrong types and values out of
// range are InvalidArgument naming the key.
absl::StatusOr<std::optional<LagPolicy>> lag_policy_from_config_json(
    const std::string& json_text);
// The JSON value to store as config.json's "lagkv": `false` when disabled,
// else an object with sink, lag, keep, score_v_weight and skip_layers.
std::string lag_policy_to_config_json(const LagPolicy& policy);
// Reads lagkv.enabled (bool), lagkv.sink, lagkv.lag, lagkv.keep (ints),
// lagkv.score_v_weight (float) and lagkv.skip_layers (int array): nullopt when
// no lagkv.* key is present; lagkv.enabled = false gives a disabled policy;
// otherwise enabled, with defaults for missing keys. Wrong types, unknown
// lagkv.* keys and values out of range are InvalidArgument naming the key.
absl::StatusOr<std::optional<LagPolicy>> lag_policy_from_gguf(const model::GgufFile& gguf);
// The policy a loaded checkpoint was trained with: config.json's "lagkv" for
// a Hugging Face folder, lagkv.* for a GGUF file (re-read from model.source);
// nullopt when it records none.
absl::StatusOr<std::optional<LagPolicy>> lag_policy_from_model(const model::Model& model);

}  // namespace lagserve::kv
