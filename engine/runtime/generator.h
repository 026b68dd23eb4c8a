// Single-sequence generation over a Backend: chunked prefill, then decode one
// token per step. (The continuously batching scheduler builds on the same
// Backend and SequenceKv pieces.)
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/kv/block_pool.h"
#include "engine/runtime/sampler.h"

namespace lagserve::runtime {

struct GenerateParams {
  SamplingParams sampling;
  int32_t max_tokens = 128;
  int32_t prefill_chunk = 512;      // tokens per prefill step
  std::vector<int32_t> stop_ids;    // generation ends after emitting one of these
};

enum class FinishReason { Length, Stop, Cancelled };

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (a stop id included)
  FinishReason finish = FinishReason::Length;
  int32_t n_prompt = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // from the first token to the last
};

// Runs the prompt and generates. on_token(id) is called for every generated
// token; returning false stops generation (FinishReason::Cancelled).
absl::StatusOr<GenerateResult> generate(backend::Backend& backend, kv::BlockPool& pool,
                                        std::span<const int32_t> prompt,
                                        const GenerateParams& params,
                                        const std::function<bool(int32_t)>& on_token);

}  // namespace lagserve::runtime
