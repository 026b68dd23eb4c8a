// Prometheus metrics registry and its text exposition (format 0.0.4).
#include "server/prometheus.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string_view>

#include "engine/common/check.h"

namespace lagserve::server {

namespace {

constexpr const char* kKindNames[] = {"counter", "gauge", "histogram"};  // by Registry::Kind

// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names the same without colons.
bool valid_name(std::string_view s, bool colon_ok) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                    (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Drops a trailing +Inf (always implied) and checks the bounds strictly increase.
std::vector<double> checked_bounds(std::vector<double> bounds) {
  if (!bounds.empty() && bounds.back() == INFINITY) bounds.pop_back();
  for (size_t i = 0; i < bounds.size(); ++i) {
    LAGSERVE_CHECK(!std::isnan(bounds[i]) && (i == 0 || bounds[i - 1] < bounds[i]),
                   "histogram bucket bounds must strictly increase: {}", fmt::join(bounds, ", "));
  }
  return bounds;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integral values print as integers ("3", not "3.0" or "3e+00"); past 1e18 the exponent
  // form is the readable one.
  if (v == std::trunc(v) && std::fabs(v) < 1e18) return fmt::format("{:.0f}", v);
  return fmt::format("{}", v);  // shortest round-trip form
}

void append_escaped(std::string& out, std::string_view s, bool escape_quote) {
  for (const char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// One sample line: name{labels[,le="..."]} value
void append_sample(std::string& out, std::string_view name, const Labels& labels,
                   const std::string* le, double value) {
  out += name;
  if (!labels.empty() || le != nullptr) {
    char sep = '{';
    for (const auto& [label, label_value] : labels) {
      out += sep;
      out += label;
      out += "=\"";
      append_escaped(out, label_value, /*escape_quote=*/true);
      out += '"';
      sep = ',';
    }
    if (le != nullptr) fmt::format_to(std::back_inserter(out), "{}le=\"{}\"", sep, *le);
    out += '}';
  }
  fmt::format_to(std::back_inserter(out), " {}\n", format_value(value));
}

}  // namespace

void Counter::inc(double v) {
  if (!(v >= 0.0)) return;                         // also drops NaN
  value_.fetch_add(v, std::memory_order_relaxed);  // C++20: a compare-exchange loop
}

void Gauge::inc(double v) { value_.fetch_add(v, std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(checked_bounds(std::move(upper_bounds))),
      bucket_counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  // First bound >= v, so a value on a boundary counts in that bucket (le is inclusive).
  // NaN compares false with everything and belongs only to +Inf.
  const size_t bucket =
      std::isnan(v)
          ? upper_bounds_.size()
          : std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), v) - upper_bounds_.begin();
  std::lock_guard lock(mu_);
  ++bucket_counts_[bucket];
  sum_ += v;
  ++count_;
}

uint64_t Histogram::count() const {
  std::lock_guard lock(mu_);
  return count_;
}

double Histogram::sum() const {
  std::lock_guard lock(mu_);
  return sum_;
}

struct Registry::Series {
  Labels labels;
  std::unique_ptr<Counter> counter;  // exactly one of the three is set, by the family's kind
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;
};

struct Registry::Family {
  std::string name, help;
  Kind kind;
  std::vector<double> buckets;                // histograms only, without +Inf
  std::vector<Series> series;                 // creation order
  std::map<Labels, size_t> series_by_labels;  // index into series
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry::Family& Registry::family(const std::string& name, const std::string& help, Kind kind) {
  if (auto it = by_name_.find(name); it != by_name_.end()) {
    LAGSERVE_CHECK(it->second->kind == kind, "metric {} is a {}, asked for as a {}", name,
                   kKindNames[static_cast<int>(it->second->kind)],
                   kKindNames[static_cast<int>(kind)]);
    return *it->second;
  }
  LAGSERVE_CHECK(valid_name(name, /*colon_ok=*/true), "bad metric name '{}'", name);
  families_.push_back(std::make_unique<Family>(Family{name, help, kind, {}, {}, {}}));
  by_name_.emplace(name, families_.back().get());
  return *families_.back();
}

Registry::Series& Registry::series(Family& family, const Labels& labels) {
  if (auto it = family.series_by_labels.find(labels); it != family.series_by_labels.end()) {
    return family.series[it->second];
  }
  for (const auto& [label, value] : labels) {
    LAGSERVE_CHECK(valid_name(label, /*colon_ok=*/false) &&
                       !(family.kind == Kind::kHistogram && label == "le"),
                   "bad label name '{}' on metric {}", label, family.name);
  }
  family.series_by_labels.emplace(labels, family.series.size());
  family.series.push_back(Series{labels, nullptr, nullptr, nullptr});
  return family.series.back();
}

Counter& Registry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(family(name, help, Kind::kCounter), labels);
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& Registry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = series(family(name, help, Kind::kGauge), labels);
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

Histogram& Registry::histogram(const std::string& name, const std::string& help,
                               std::vector<double> buckets, const Labels& labels) {
  buckets = checked_bounds(std::move(buckets));
  std::lock_guard lock(mu_);
  Family& f = family(name, help, Kind::kHistogram);
  // A family is created together with its first series, so no series means it is new.
  if (f.series.empty()) f.buckets = buckets;
  LAGSERVE_CHECK(f.buckets == buckets, "histogram {} registered with other buckets", name);
  Series& s = series(f, labels);
  if (!s.histogram) s.histogram = std::make_unique<Histogram>(std::move(buckets));
  return *s.histogram;
}

std::string Registry::render() const {
  std::string out;
  std::lock_guard lock(mu_);
  for (const auto& f : families_) {
    out += "# HELP ";
    out += f->name;
    out += ' ';
    append_escaped(out, f->help, /*escape_quote=*/false);
    fmt::format_to(std::back_inserter(out), "\n# TYPE {} {}\n", f->name,
                   kKindNames[static_cast<int>(f->kind)]);
    for (const Series& s : f->series) {
      if (f->kind == Kind::kCounter)
        append_sample(out, f->name, s.labels, nullptr, s.counter->value());
      if (f->kind == Kind::kGauge) append_sample(out, f->name, s.labels, nullptr, s.gauge->value());
      if (f->kind != Kind::kHistogram) continue;
      const Histogram& h = *s.histogram;
      std::vector<uint64_t> counts;
      double sum;
      {
        std::lock_guard histogram_lock(h.mu_);
        counts = h.bucket_counts_;
        sum = h.sum_;
      }
      const std::string bucket_name = f->name + "_bucket";
      uint64_t cumulative = 0;
      for (size_t i = 0; i < counts.size(); ++i) {
        cumulative += counts[i];
        const std::string le =
            i < h.upper_bounds_.size() ? format_value(h.upper_bounds_[i]) : "+Inf";
        append_sample(out, bucket_name, s.labels, &le, static_cast<double>(cumulative));
      }
      append_sample(out, f->name + "_sum", s.labels, nullptr, sum);
      append_sample(out, f->name + "_count", s.labels, nullptr, static_cast<double>(cumulative));
    }
  }
  return out;
}

}  // namespace lagserve::server
