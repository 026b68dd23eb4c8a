// The server's Prometheus metrics, named after vLLM's (lagserve: instead of
// vllm:) so that dashboards carry over, plus the KV compression figures.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "engine/runtime/engine.h"
#include "engine/runtime/stop_checker.h"
#include "server/prometheus.h"

namespace lagserve::server {

class ServerMetrics {
 public:
  explicit ServerMetrics(const std::string& model_name);

  // Per-request events (thread-safe).
  // The first token shows the prompt was processed: it counts n_prompt.
  void on_first_token(int32_t n_prompt, double ttft_s, double queue_s);
  void on_token_gap(double itl_s);
  void on_finish(runtime::FinishReason reason, int32_t n_output, double e2e_s);
  // Gauges and engine counters, from a snapshot of the engine.
  void update(const runtime::EngineStats& stats);
  std::string render() const { return registry_.render(); }

 private:
  Registry registry_;
  Labels labels_;
  Gauge& running_;
  Gauge& waiting_;
  Gauge& kv_usage_;
  Counter& prompt_tokens_;
  Counter& generation_tokens_;
  Counter& success_stop_;
  Counter& success_length_;
  Counter& success_abort_;
  Counter& preemptions_;
  Histogram& ttft_;
  Histogram& itl_;
  Histogram& e2e_;
  Histogram& queue_;
  Counter& evicted_;
  Gauge& retained_;
  Gauge& compression_;
  std::mutex update_mu_;  // update() reads and advances the seen_* counts
  int64_t seen_preemptions_ = 0;
  int64_t seen_evicted_ = 0;
};

}  // namespace lagserve::server
