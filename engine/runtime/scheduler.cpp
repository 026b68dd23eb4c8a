// Scheduler::schedule: running sequences first (oldest first), then admission.
#include "engine/runtime/scheduler.h"

#include <algorithm>

#include "engine/common/check.h"

namespace lagserve::runtime {

void Scheduler::add(Sequence* seq) {
  seq->status = SeqStatus::Waiting;
  waiting_.push_back(seq);
}

void Scheduler::remove(Sequence* seq) {
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
}

int32_t Scheduler::footprint_blocks(const Sequence& seq) const {
  const int32_t total = seq.n_prompt() + seq.request.stop.max_tokens;
  return kv::SequenceCache::blocks_for(seq.cache.policy(), config_.n_layers, config_.block_size,
                                       total);
}

int32_t Scheduler::chunk_size(const Sequence& seq, int32_t budget) const {
  if (seq.cache.has_compressed()) {
    // Keep the compressed group within the cap that admission counted on:
    // a step holds its new tokens whole until its compactions run.
    const int32_t cap = kv::SequenceCache::entries_cap(
        seq.cache.policy(), seq.n_prompt() + seq.request.stop.max_tokens);
    budget = std::min(budget, cap - seq.cache.compressed().cache_len());
    LAGSERVE_CHECK(budget > 0, "no room under the KV cap of request {}", seq.request.id);
  }
  const int32_t pending = seq.n_pending();
  if (pending <= budget) return pending;
  const kv::LagPolicy& p = seq.cache.policy();
  if (!p.enabled) return budget;
  // Largest partition boundary S + jL inside the budget; if none fits, the
  // budget itself (any cut is correct, boundaries only keep chunks aligned).
  const int32_t start = seq.n_computed(), limit = start + budget;
  if (limit < p.sink) return budget;
  const int32_t boundary = p.sink + ((limit - p.sink) / p.lag) * p.lag;
  return boundary > start ? boundary - start : budget;
}

void Scheduler::preempt(Sequence* seq, kv::BlockPool& pool, StepPlan& plan) {
  seq->cache.release(pool);
  seq->status = SeqStatus::Waiting;
  ++seq->n_preemptions;
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  // Back into the waiting queue at its arrival position (ahead of newer ones).
  auto it = std::find_if(waiting_.begin(), waiting_.end(),
                         [&](const Sequence* w) { return w->arrival > seq->arrival; });
  waiting_.insert(it, seq);
  plan.preempted.push_back(seq);
}

StepPlan Scheduler::schedule(kv::BlockPool& pool) {
  StepPlan plan;
  int32_t budget = config_.max_batched_tokens;
  // 1. Running sequences, oldest first. When blocks run out, the newest
  //    running sequence gives its blocks back (and may be this one).
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const int32_t n = chunk_size(*seq, budget);
    if (n <= 0) {
      ++i;
      continue;
    }
    bool scheduled = false;
    while (true) {
      if (seq->cache.reserve(pool, n).ok()) {
        scheduled = true;
        break;
      }
      // NOTE: the newest is at or after i, so it is never already in the plan.
      Sequence* victim = running_.back();
      preempt(victim, pool, plan);
      if (victim == seq) break;
    }
    if (!scheduled) continue;  // seq itself was preempted; running_[i] is now the next one
    plan.seqs.push_back({seq, n});
    plan.n_tokens += n;
    budget -= n;
    ++i;
  }
  // 2. Admission, first come first served: the head of the queue must fit by
  //    its whole compressed footprint, or nobody behind it is admitted.
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int32_t>(running_.size()) < config_.max_seqs) {
    Sequence* seq = waiting_.front();
    if (!plan.preempted.empty() &&
        std::find(plan.preempted.begin(), plan.preempted.end(), seq) != plan.preempted.end()) {
      break;  // just preempted: let the others make progress first
    }
    if (pool.n_free() < footprint_blocks(*seq)) break;
    const int32_t n = chunk_size(*seq, budget);
    if (!seq->cache.reserve(pool, n).ok()) break;
    waiting_.pop_front();
    seq->status = SeqStatus::Running;
    running_.push_back(seq);
    plan.seqs.push_back({seq, n});
    plan.n_tokens += n;
    budget -= n;
  }
  return plan;
}

}  // namespace lagserve::runtime
