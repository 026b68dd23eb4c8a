// ServerMetrics: the metric families and the events that feed them. Bucket
// bounds are vLLM's, so histograms compare one to one.
#include "server/server_metrics.h"

namespace lagserve::server {
namespace {

const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                          20.0,  40.0,  80.0, 160., 640., 2560.};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                         0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                         7.5,  10.0,  20.0, 40.0,  80.0};
const std::vector<double> kLatencyBuckets = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,
                                             5.0,  10.0, 15.0, 20.0, 30.0, 40.0,  50.0,
                                             60.0, 120., 240., 480., 960., 1920., 7680.};

Labels with(Labels labels, const std::string& key, const std::string& value) {
  labels.emplace_back(key, value);
  return labels;
}

}  // namespace

ServerMetrics::ServerMetrics(const std::string& model_name)
    : labels_{{"model_name", model_name}},
      running_(registry_.gauge("lagserve:num_requests_running",
                               "Number of requests in the model's batch.", labels_)),
      waiting_(registry_.gauge("lagserve:num_requests_waiting",
                               "Number of requests waiting to be processed.", labels_)),
      kv_usage_(registry_.gauge("lagserve:kv_cache_usage_perc",
                                "KV-cache usage. 1 means 100 percent usage.", labels_)),
      prompt_tokens_(registry_.counter("lagserve:prompt_tokens_total",
                                       "Number of prefill tokens processed.", labels_)),
      generation_tokens_(registry_.counter("lagserve:generation_tokens_total",
                                           "Number of generation tokens processed.", labels_)),
      success_stop_(registry_.counter("lagserve:request_success_total",
                                      "Count of finished requests by finish reason.",
                                      with(labels_, "finished_reason", "stop"))),
      success_length_(registry_.counter("lagserve:request_success_total",
                                        "Count of finished requests by finish reason.",
                                        with(labels_, "finished_reason", "length"))),
      success_abort_(registry_.counter("lagserve:request_success_total",
                                       "Count of finished requests by finish reason.",
                                       with(labels_, "finished_reason", "abort"))),
      preemptions_(registry_.counter("lagserve:num_preemptions_total",
                                     "Cumulative number of preemptions.", labels_)),
      ttft_(registry_.histogram("lagserve:time_to_first_token_seconds",
                                "Histogram of time to first token in seconds.", kTtftBuckets,
                                labels_)),
      itl_(registry_.histogram("lagserve:inter_token_latency_seconds",
                               "Histogram of inter-token latency in seconds.", kItlBuckets,
                               labels_)),
      e2e_(registry_.histogram("lagserve:e2e_request_latency_seconds",
                               "Histogram of end to end request latency in seconds.",
                               kLatencyBuckets, labels_)),
      queue_(registry_.histogram("lagserve:request_queue_time_seconds",
                                 "Histogram of time spent waiting for the first engine step.",
                                 kLatencyBuckets, labels_)),
      evicted_(registry_.counter("lagserve:kv_tokens_evicted_total",
                                 "KV tokens dropped by LagKV compaction.", labels_)),
      retained_(registry_.gauge("lagserve:kv_tokens_retained",
                                "KV tokens held by running requests (compressed layers).",
                                labels_)),
      compression_(registry_.gauge(
          "lagserve:kv_compression_ratio",
          "Tokens computed over KV tokens held, for running requests (1: no compression).",
          labels_)) {
  compression_.set(1.0);
}

void ServerMetrics::on_first_token(int32_t n_prompt, double ttft_s, double queue_s) {
  prompt_tokens_.inc(n_prompt);
  ttft_.observe(ttft_s);
  queue_.observe(queue_s);
}

void ServerMetrics::on_token_gap(double itl_s) { itl_.observe(itl_s); }

void ServerMetrics::on_finish(runtime::FinishReason reason, int32_t n_output, double e2e_s) {
  generation_tokens_.inc(n_output);
  e2e_.observe(e2e_s);
  switch (reason) {
    case runtime::FinishReason::Stop: success_stop_.inc(); break;
    case runtime::FinishReason::Length: success_length_.inc(); break;
    default: success_abort_.inc(); break;
  }
}

void ServerMetrics::update(const runtime::EngineStats& s) {
  std::lock_guard<std::mutex> lock(update_mu_);
  running_.set(s.n_running);
  waiting_.set(s.n_waiting);
  kv_usage_.set(s.blocks_total > 0 ? static_cast<double>(s.blocks_used) / s.blocks_total : 0.0);
  preemptions_.inc(static_cast<double>(s.n_preemptions - seen_preemptions_));
  seen_preemptions_ = s.n_preemptions;
  evicted_.inc(static_cast<double>(s.kv_tokens_evicted - seen_evicted_));
  seen_evicted_ = s.kv_tokens_evicted;
  retained_.set(static_cast<double>(s.kv_tokens_retained));
  compression_.set(s.kv_tokens_retained > 0
                       ? static_cast<double>(s.kv_tokens_logical) / s.kv_tokens_retained
                       : 1.0);
}

}  // namespace lagserve::server
