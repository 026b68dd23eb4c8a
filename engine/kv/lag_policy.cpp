// LagPolicy: spec parsing, partition arithmetic, visibility, cache contents,
// and the scoring and selection reference (DESIGN.md section 1).
#include "engine/kv/lag_policy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

#include "engine/common/check.h"

namespace lagserve::kv {
namespace {

std::string_view trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

absl::Status bad_value(std::string_view key, std::string_view value, std::string_view why) {
  return absl::InvalidArgumentError(
      fmt::format("lagkv policy: {}={}: {}", key, value, why));
}

// Whole-string parses: no sign prefix '+', no trailing characters.
template <typename T>
bool parse_number(std::string_view s, T* out) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

absl::StatusOr<int32_t> parse_int_value(std::string_view key, std::string_view value) {
  int32_t v = 0;
  if (!parse_number(value, &v)) return bad_value(key, value, "not an integer that fits int32");
  return v;
}

// "0;1;5" -> {0, 1, 5}; "" -> {}.
absl::StatusOr<std::vector<int32_t>> parse_layer_list(std::string_view value) {
  std::vector<int32_t> layers;
  if (value.empty()) return layers;
  size_t start = 0;
  while (true) {
    const size_t semi = value.find(';', start);
    const std::string_view item =
        trim(value.substr(start, semi == std::string_view::npos ? value.npos : semi - start));
    int32_t layer = 0;
    if (!parse_number(item, &layer)) {
      return bad_value("skip_layers", value,
                       fmt::format("'{}' is not a layer index (layers are separated by ';')", item));
    }
    layers.push_back(layer);
    if (semi == std::string_view::npos) break;
    start = semi + 1;
  }
  return layers;
}

}  // namespace

absl::StatusOr<LagPolicy> LagPolicy::from_fields(const LagPolicyFields& f) {
  LagPolicy p;
  p.enabled = true;
  if (f.sink) p.sink = *f.sink;
  if (f.lag) p.lag = *f.lag;
  if (f.score_v_weight) p.score_v_weight = *f.score_v_weight;
  if (f.skip_layers) {
    p.skip_layers = *f.skip_layers;
    std::sort(p.skip_layers.begin(), p.skip_layers.end());
    p.skip_layers.erase(std::unique(p.skip_layers.begin(), p.skip_layers.end()),
                        p.skip_layers.end());
  }
  if (p.lag < 1) return bad_value("lag", std::to_string(p.lag), "must be at least 1");
  if (f.keep && f.ratio) {
    return bad_value("ratio", fmt::format("{}", *f.ratio), "give keep or ratio, not both");
  }
  if (f.keep) {
    p.keep = *f.keep;
  } else if (f.ratio) {
    const double r = *f.ratio;
    if (!(r > 0.0 && r <= 1.0)) return bad_value("ratio", fmt::format("{}", r), "must be in (0, 1]");
    const double k = std::round(r * p.lag);  // halves away from zero
    if (k < 1.0) {
      return bad_value("ratio", fmt::format("{}", r),
                       fmt::format("keeps {} of lag={} tokens; at least 1 is needed", k, p.lag));
    }
    p.keep = static_cast<int32_t>(k);
  } else {
    p.keep = default_keep(p.lag);
  }
  if (absl::Status st = p.validate(); !st.ok()) return st;
  return p;
}

absl::Status LagPolicy::validate() const {
  if (!enabled) return absl::OkStatus();
  if (sink < 0) return bad_value("sink", std::to_string(sink), "must be >= 0");
  if (lag < 1) return bad_value("lag", std::to_string(lag), "must be at least 1");
  if (keep < 1 || keep > lag) {
    return bad_value("keep", std::to_string(keep), fmt::format("must be in [1, lag={}]", lag));
  }
  if (!std::isfinite(score_v_weight) || score_v_weight < 0.0f) {
    return bad_value("score_v_weight", fmt::format("{}", score_v_weight),
                     "must be finite and >= 0");
  }
  for (size_t i = 0; i < skip_layers.size(); ++i) {
    if (skip_layers[i] < 0) {
      return bad_value("skip_layers", std::to_string(skip_layers[i]), "layers are >= 0");
    }
    if (i > 0 && skip_layers[i] <= skip_layers[i - 1]) {
      return bad_value("skip_layers", std::to_string(skip_layers[i]),
                       "must be sorted and unique");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LagPolicy> LagPolicy::parse(std::string_view spec) {
  const std::string_view whole = trim(spec);
  if (whole == "off") return LagPolicy{};
  if (whole == "on") return from_fields({});
  if (whole.empty()) {
    return absl::InvalidArgumentError(
        "lagkv policy: empty spec (use 'off', 'on' or key=value pairs)");
  }
  LagPolicyFields f;
  std::set<std::string, std::less<>> seen;
  size_t start = 0;
  while (start <= whole.size()) {
    const size_t comma = whole.find(',', start);
    const size_t stop = comma == std::string_view::npos ? whole.size() : comma;
    const std::string_view pair = trim(whole.substr(start, stop - start));
    start = stop + 1;
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      return absl::InvalidArgumentError(fmt::format(
          "lagkv policy: '{}' is not key=value (in '{}')", pair, whole));
    }
    std::string_view key = trim(pair.substr(0, eq));
    const std::string_view value = trim(pair.substr(eq + 1));
    if (key == "w") key = "score_v_weight";
    if (!seen.insert(std::string(key)).second) {
      return bad_value(key, value, "given more than once");
    }
    if (key == "sink" || key == "lag" || key == "keep") {
      absl::StatusOr<int32_t> v = parse_int_value(key, value);
      if (!v.ok()) return v.status();
      (key == "sink" ? f.sink : key == "lag" ? f.lag : f.keep) = *v;
    } else if (key == "ratio") {
      double r = 0;
      if (!parse_number(value, &r)) return bad_value(key, value, "not a number");
      f.ratio = r;
    } else if (key == "score_v_weight") {
      float w = 0;
      if (!parse_number(value, &w)) return bad_value(key, value, "not an fp32 number");
      f.score_v_weight = w;
    } else if (key == "skip_layers") {
      absl::StatusOr<std::vector<int32_t>> layers = parse_layer_list(value);
      if (!layers.ok()) return layers.status();
      f.skip_layers = std::move(*layers);
    } else {
      return bad_value(key, value,
                       "unknown key (known: sink, lag, keep, ratio, score_v_weight or w, "
                       "skip_layers)");
    }
    if (comma == std::string_view::npos) break;
  }
  return from_fields(f);
}

std::string LagPolicy::to_string() const {
  if (!enabled) return "off";
  // fmt writes a float in its shortest form that reads back to the same float.
  std::string s = fmt::format("sink={},lag={},keep={},score_v_weight={}", sink, lag, keep,
                              score_v_weight);
  if (!skip_layers.empty()) s += fmt::format(",skip_layers={}", fmt::join(skip_layers, ";"));
  return s;
}

bool LagPolicy::layer_compressed(int32_t layer) const {
  return enabled && !std::binary_search(skip_layers.begin(), skip_layers.end(), layer);
}

int32_t LagPolicy::partition_of(int32_t t) const {
  LAGSERVE_CHECK(t >= sink && lag >= 1, "partition_of({}) needs t >= sink={}, lag={} >= 1", t,
                 sink, lag);
  return (t - sink) / lag;
}

int32_t LagPolicy::complete_partitions(int32_t n) const {
  LAGSERVE_CHECK(n >= 0 && lag >= 1, "complete_partitions({}) with lag={}", n, lag);
  return n < sink ? 0 : (n - sink) / lag;
}

int32_t LagPolicy::compressed_partitions(int32_t n) const {
  if (!enabled) return 0;
  return std::max(0, complete_partitions(n) - 1);
}

int32_t LagPolicy::retained_len(int32_t n) const {
  if (!enabled) return n;
  const int32_t m = complete_partitions(n);
  if (m < 2) return n;
  return sink + (m - 1) * keep + (n - sink - (m - 1) * lag);
}

bool lag_visible(const LagPolicy& p, int32_t t, int32_t j, bool j_selected) {
  LAGSERVE_CHECK(t >= 0 && j >= 0, "lag_visible(t={}, j={}) needs positions >= 0", t, j);
  if (j > t) return false;
  if (!p.enabled) return true;
  if (static_cast<int64_t>(t) < static_cast<int64_t>(p.sink) + 2 * static_cast<int64_t>(p.lag)) {
    return true;  // plain causal until partition 0 has a complete successor behind t's own
  }
  if (j < p.sink) return true;
  // j <= t, so c(j) <= c(t): partitions c(t) - 1 and c(t) are whole (up to t);
  // older ones keep only their selection.
  return p.partition_of(j) <= p.partition_of(t) - 2 ? j_selected : true;
}

namespace {

// s[i] = Bessel-corrected std over channels of (cur[i, j] - mn_j) / max(mx_j - mn_j, 1e-6),
// with mn, mx the per-channel min and max over ref; then softmax over i.
std::vector<float> score_one(const float* cur, const float* ref, int32_t L, int32_t d,
                             int64_t row_stride) {
  std::vector<float> mn(ref, ref + d), mx(ref, ref + d);
  for (int32_t i = 1; i < L; ++i) {
    const float* r = ref + i * row_stride;
    for (int32_t j = 0; j < d; ++j) {
      mn[j] = std::min(mn[j], r[j]);
      mx[j] = std::max(mx[j], r[j]);
    }
  }
  std::vector<float> range(d);
  for (int32_t j = 0; j < d; ++j) range[j] = std::max(mx[j] - mn[j], 1e-6f);

  std::vector<float> s(L), nrm(d);
  for (int32_t i = 0; i < L; ++i) {
    const float* c = cur + i * row_stride;
    double sum = 0;
    for (int32_t j = 0; j < d; ++j) {
      nrm[j] = (c[j] - mn[j]) / range[j];
      sum += nrm[j];
    }
    const double mean = sum / d;
    double sq = 0;
    for (int32_t j = 0; j < d; ++j) sq += (nrm[j] - mean) * (nrm[j] - mean);
    s[i] = static_cast<float>(std::sqrt(sq / (d - 1)));
  }

  const float s_max = *std::max_element(s.begin(), s.end());
  std::vector<double> e(L);
  double total = 0;
  for (int32_t i = 0; i < L; ++i) {
    e[i] = std::exp(static_cast<double>(s[i]) - s_max);
    total += e[i];
  }
  for (int32_t i = 0; i < L; ++i) s[i] = static_cast<float>(e[i] / total);
  return s;
}

}  // namespace

std::vector<float> lag_scores(const float* cur_k, const float* ref_k, const float* cur_v,
                              const float* ref_v, int32_t L, int32_t d, int64_t row_stride,
                              float score_v_weight) {
  LAGSERVE_CHECK(d >= 2 && L >= 1 && row_stride >= d,
                 "lag_scores needs d={} >= 2, L={} >= 1, row_stride={} >= d", d, L, row_stride);
  std::vector<float> score = score_one(cur_k, ref_k, L, d, row_stride);
  const std::vector<float> score_v = score_one(cur_v, ref_v, L, d, row_stride);
  for (int32_t i = 0; i < L; ++i) score[i] = score[i] + score_v_weight * score_v[i];
  return score;
}

std::vector<int32_t> lag_select(std::span<const float> scores, int32_t k) {
  const int32_t n = static_cast<int32_t>(scores.size());
  LAGSERVE_CHECK(k >= 1 && k <= n, "lag_select: k={} of {} scores", k, n);
  for (int32_t i = 0; i < n; ++i) {
    LAGSERVE_CHECK(!std::isnan(scores[i]), "lag_select: score {} is NaN", i);
  }
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Higher score first; equal scores by lower offset: a strict total order.
  const auto better = [&](int32_t a, int32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  };
  std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), better);
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace lagserve::kv
