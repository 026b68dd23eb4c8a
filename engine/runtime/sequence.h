// A request in flight: its tokens, how many are computed, its KV cache
// bookkeeping, sampler and output stream. Owned by the Engine; the scheduler
// reads and updates only the counts and the cache.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/kv/sequence_cache.h"
#include "engine/runtime/request.h"
#include "engine/runtime/sampler.h"
#include "engine/runtime/stop_checker.h"

namespace lagserve::runtime {

enum class SeqStatus { Waiting, Running, Finished };

struct Sequence {
  Sequence(Request r, uint64_t arrival_index, kv::SequenceCache c, std::unique_ptr<Sampler> s,
           std::unique_ptr<OutputStream> o)
      : request(std::move(r)), arrival(arrival_index), cache(std::move(c)),
        sampler(std::move(s)), stream(std::move(o)) {
    tokens = request.prompt;
  }

  Request request;
  uint64_t arrival;                 // FCFS order
  std::vector<int32_t> tokens;      // prompt then generated tokens
  kv::SequenceCache cache;          // its logical length counts the computed tokens
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<OutputStream> stream;
  SeqStatus status = SeqStatus::Waiting;
  int32_t n_preemptions = 0;
  std::chrono::steady_clock::time_point added_at = std::chrono::steady_clock::now();
  double queue_seconds = -1;  // set when first scheduled

  int32_t n_prompt() const { return static_cast<int32_t>(request.prompt.size()); }
  int32_t n_output() const { return static_cast<int32_t>(tokens.size()) - n_prompt(); }
  // Tokens known but not yet computed (the rest of a prompt, a recompute after
  // preemption, or the one new token of a decode step).
  int32_t n_computed() const { return cache.logical_len(); }
  int32_t n_pending() const { return static_cast<int32_t>(tokens.size()) - n_computed(); }
  std::span<const int32_t> prompt_tokens() const { return request.prompt; }
  std::span<const int32_t> output_tokens() const {
    return std::span<const int32_t>(tokens).subspan(request.prompt.size());
  }
};

}  // namespace lagserve::runtime
