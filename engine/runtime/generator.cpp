// generate: one SequenceKv, prefill in chunks, then decode until a stop.
#include "engine/runtime/generator.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

#include "engine/common/status_macros.h"
#include "engine/kv/sequence_kv.h"

namespace lagserve::runtime {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs tokens through the model and returns the last row of logits.
absl::StatusOr<std::vector<float>> run_tokens(backend::Backend& backend, kv::BlockPool& pool,
                                              kv::SequenceKv& seq,
                                              std::span<const int32_t> tokens) {
  LAGSERVE_RETURN_IF_ERROR(seq.reserve(pool, static_cast<int32_t>(tokens.size())));
  backend::StepBatch batch;
  batch.seqs.push_back({tokens, seq.logical_len(), seq.cache_len(), seq.block_table(), false});
  LAGSERVE_ASSIGN_OR_RETURN(backend::StepOutput out, backend.step(batch));
  seq.advance(static_cast<int32_t>(tokens.size()));
  auto row = out.last_row(0);
  return std::vector<float>(row.begin(), row.end());
}

}  // namespace

absl::StatusOr<GenerateResult> generate(backend::Backend& backend, kv::BlockPool& pool,
                                        std::span<const int32_t> prompt,
                                        const GenerateParams& params,
                                        const std::function<bool(int32_t)>& on_token) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (params.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must be >= 0");
  LAGSERVE_RETURN_IF_ERROR(validate(params.sampling, backend.config().vocab_size));
  const int64_t total = static_cast<int64_t>(prompt.size()) + params.max_tokens;
  if (total > backend.config().max_positions) {
    return absl::InvalidArgumentError(fmt::format(
        "prompt ({} tokens) plus max_tokens ({}) exceeds the model's context of {} tokens",
        prompt.size(), params.max_tokens, backend.config().max_positions));
  }
  kv::SequenceKv seq(backend.block_size());
  GenerateResult result;
  result.n_prompt = static_cast<int32_t>(prompt.size());
  auto status = [&]() -> absl::Status {
    Sampler sampler(params.sampling, /*fallback_seed=*/0);
    const int32_t chunk = std::max(1, params.prefill_chunk);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<float> logits;
    for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
      const size_t n = std::min<size_t>(chunk, prompt.size() - begin);
      LAGSERVE_ASSIGN_OR_RETURN(logits, run_tokens(backend, pool, seq, prompt.subspan(begin, n)));
    }
    result.prefill_seconds = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int32_t i = 0; i < params.max_tokens; ++i) {
      const int32_t id = sampler.sample(logits, prompt, result.tokens, {}).token;
      result.tokens.push_back(id);
      if (!on_token(id)) {
        result.finish = FinishReason::Cancelled;
        break;
      }
      if (std::find(params.stop_ids.begin(), params.stop_ids.end(), id) != params.stop_ids.end()) {
        result.finish = FinishReason::Stop;
        break;
      }
      if (i + 1 == params.max_tokens) break;  // the last token needs no forward pass
      LAGSERVE_ASSIGN_OR_RETURN(logits, run_tokens(backend, pool, seq, std::span(&id, 1)));
    }
    result.decode_seconds = seconds_since(t0);
    return absl::OkStatus();
  }();
  seq.release(pool);
  if (!status.ok()) return status;
  return result;
}

}  // namespace lagserve::runtime
