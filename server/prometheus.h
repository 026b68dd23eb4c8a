// Prometheus metrics: thread-safe counters, gauges and histograms in a registry
// that renders the text exposition format 0.0.4 for GET /metrics.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace lagserve::server {

// Label name -> value, rendered in this order. Names match [a-zA-Z_][a-zA-Z0-9_]*.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Monotonic. Lock-free.
class Counter {
 public:
  // NOTE: v < 0 (or NaN) is ignored: a counter never goes down.
  void inc(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Goes up and down. Lock-free.
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double v = 1.0);
  void dec(double v = 1.0) { inc(-v); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Counts observations into buckets by upper bound (inclusive, `le`), plus +Inf.
// NOTE: a mutex rather than atomics per bucket, so that a render sees one
// consistent snapshot (_count equals the +Inf bucket and matches _sum).
class Histogram {
 public:
  // Precondition: upper_bounds strictly increasing; a trailing +Inf is dropped.
  explicit Histogram(std::vector<double> upper_bounds);

  void observe(double v);
  uint64_t count() const;
  double sum() const;

 private:
  friend class Registry;
  std::vector<double> upper_bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> bucket_counts_;  // [upper_bounds_.size() + 1], not cumulative
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Return the series (name, labels), creating it (and its family with help text and
  // type) on first use; later calls ignore help. Returned references stay valid for the
  // registry's lifetime. Names match [a-zA-Z_:][a-zA-Z0-9_:]*. A name reused with
  // another type, or a histogram with other buckets, is a bug and aborts.
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help,
                       std::vector<double> buckets, const Labels& labels = {});

  // Text exposition format 0.0.4: families in registration order, each with
  // # HELP and # TYPE once, then its series in creation order.
  std::string render() const;

 private:
  enum class Kind { kCounter, kGauge, kHistogram };
  struct Family;
  struct Series;
  Family& family(const std::string& name, const std::string& help, Kind kind);  // mu_ held
  static Series& series(Family& family, const Labels& labels);                  // mu_ held

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;  // registration order
  std::map<std::string, Family*, std::less<>> by_name_;
};

}  // namespace lagserve::server
