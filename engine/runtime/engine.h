// The engine: owns the sequences, the block pool and the scheduler, and runs
// one step at a time over a Backend. Single-threaded; AsyncEngine puts it
// behind a thread. Like vLLM's LLMEngine, it is also the offline batch path.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/lag_policy.h"
#include "engine/model/tokenizer.h"
#include "engine/runtime/request.h"
#include "engine/runtime/scheduler.h"

namespace lagserve::runtime {

struct EngineConfig {
  int32_t max_batched_tokens = 2048;
  int32_t max_seqs = 64;
  kv::LagPolicy default_policy;  // disabled unless set
  uint64_t seed = 0;             // seeds the sampler of requests without their own
  // Called with the positions each compaction kept, per request, layer, KV head.
  std::function<void(const std::string& request_id, const backend::EvictionRecord&)> on_eviction;
};

struct EngineStats {
  int32_t n_running = 0;
  int32_t n_waiting = 0;
  int32_t blocks_used = 0;
  int32_t blocks_total = 0;  // usable blocks (the null block excluded)
  int64_t n_preemptions = 0;
  int64_t n_steps = 0;
  int32_t peak_blocks_used = 0;
  // KV tokens dropped by compaction since start (compressed layer group).
  int64_t kv_tokens_evicted = 0;
  // Now, over the sequences holding a cache: the tokens they have computed
  // (logical) and the entries their caches keep (retained; the compressed
  // group's when the policy is on, else the full group's).
  int64_t kv_tokens_logical = 0;
  int64_t kv_tokens_retained = 0;
};

class Engine {
 public:
  // The backend and tokenizer must outlive the engine.
  Engine(backend::Backend& backend, const model::Tokenizer& tokenizer, EngineConfig config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Checks a request against the model and the cache (prompt length, token
  // ids, sampling parameters, footprint); InvalidArgument says what is wrong.
  // Thread-safe (reads only configuration).
  absl::Status validate(const Request& request) const;
  // Queues a request (validating it first).
  absl::Status add_request(Request request);
  // Cancels a queued or running request; its blocks are freed at the next
  // step, which reports it with FinishReason::Abort. Unknown ids are ignored.
  void abort_request(const std::string& id);

  // Runs one step. Returns the outputs of the requests that produced tokens
  // or finished in it.
  absl::StatusOr<std::vector<RequestOutput>> step();
  bool has_work() const { return !sequences_.empty(); }
  EngineStats stats() const;
  const kv::BlockPool& pool() const { return pool_; }
  const EngineConfig& config() const { return config_; }

 private:
  void finish(Sequence& seq, RequestOutput& out, FinishReason reason);

  backend::Backend& backend_;
  const model::Tokenizer& tokenizer_;
  EngineConfig config_;
  kv::BlockPool pool_;
  Scheduler scheduler_;
  std::map<std::string, std::unique_ptr<Sequence>> sequences_;
  std::vector<std::string> aborted_;
  uint64_t next_arrival_ = 0;
  EngineStats stats_;
};

}  // namespace lagserve::runtime
