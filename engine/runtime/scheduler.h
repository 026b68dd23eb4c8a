// The scheduler: each step brings every running sequence's computed tokens
// toward its known tokens under a token budget (no prefill/decode modes; this
// gives chunked prefill), admits waiting sequences first-come first-served by
// their compressed KV footprint, and preempts the newest running sequence
// (recompute) when blocks run out. It never touches tensors; its output is a
// plain StepPlan.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/kv/block_pool.h"
#include "engine/runtime/sequence.h"

namespace lagserve::runtime {

struct SchedulerConfig {
  int32_t max_batched_tokens = 2048;  // tokens per step, all sequences together
  int32_t max_seqs = 64;              // running sequences
  int32_t n_layers = 0;
  int32_t block_size = 16;
};

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int32_t n_tokens = 0;  // tokens to compute this step, from seq->n_computed()
};

struct StepPlan {
  std::vector<ScheduledSeq> seqs;
  std::vector<Sequence*> preempted;  // sent back to waiting this step
  int32_t n_tokens = 0;

  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config) : config_(config) {}

  void add(Sequence* seq);     // to the back of the waiting queue
  void remove(Sequence* seq);  // finished or aborted; its blocks must be released by the caller
  // Plans one step. Reserves the blocks the plan needs in `pool`.
  StepPlan schedule(kv::BlockPool& pool);

  // Blocks a sequence needs to run to its end (prompt + max_tokens), compressed.
  int32_t footprint_blocks(const Sequence& seq) const;

  int32_t n_running() const { return static_cast<int32_t>(running_.size()); }
  int32_t n_waiting() const { return static_cast<int32_t>(waiting_.size()); }
  bool has_work() const { return !running_.empty() || !waiting_.empty(); }

 private:
  // Tokens to run for `seq` within `budget`: chunks of a prompt end on
  // partition boundaries (S + jL) when the policy compresses.
  int32_t chunk_size(const Sequence& seq, int32_t budget) const;
  void preempt(Sequence* seq, kv::BlockPool& pool, StepPlan& plan);

  SchedulerConfig config_;
  std::vector<Sequence*> running_;  // in arrival order
  std::deque<Sequence*> waiting_;   // in arrival order (preempted ones go back by arrival)
};

}  // namespace lagserve::runtime
