// Token sampling for one sequence: penalties, logit bias, bans, temperature,
// top-k / top-p / min-p, a seeded draw, and logprobs (vLLM semantics).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace lagserve::runtime {

// The most top logprobs a request may ask for (OpenAI's top_logprobs limit).
inline constexpr int32_t kMaxLogprobs = 20;

struct SamplingParams {             // vLLM semantics
  float temperature = 1.0f;         // 0 => greedy (ties -> lower id)
  int32_t top_k = 0;                // <= 0: off
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; on prompt AND output tokens (logit>0 ? logit/p : logit*p)
  float presence_penalty = 0.0f;    // [-2, 2], output tokens only (OpenAI)
  float frequency_penalty = 0.0f;   // [-2, 2], output tokens only
  std::vector<std::pair<int32_t, float>> logit_bias;  // (id, bias in [-100, 100]) added to logits
  std::optional<uint64_t> seed;     // per-request; none => the fallback seed given to Sampler
  int32_t logprobs = -1;            // -1 none; n in [0, kMaxLogprobs]: chosen token's logprob + top n
};

// InvalidArgument naming the offending field when a value is out of range or
// a logit_bias id is outside [0, vocab_size).
absl::Status validate(const SamplingParams& params, int32_t vocab_size);

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampleResult {
  int32_t token;
  float logprob;                  // of `token`; 0 when params.logprobs < 0
  std::vector<TokenLogprob> top;  // params.logprobs entries, most likely first (ties: lower id)
};

// Buffers that sampling reuses across calls (sized to the vocabulary on first
// use, so steady-state sampling does not allocate them again).
struct SamplerScratch {
  std::vector<float> work;          // processed logits
  std::vector<float> weights;       // exp(scaled - max), 0 below the top_k cut
  std::vector<double> block_mass;   // sum of weights per 1024 ids
  std::vector<float> select;        // top_k: the k largest scaled logits
  std::vector<int64_t> hist;        // top_p: mass per weight bin, fixed point
  std::vector<std::pair<float, float>> cands;  // top_p candidates: (scaled logit, weight)
  std::vector<int32_t> counts;      // per-id counts for penalties, all zero between calls
};

// Processing order, applied to a copy of the raw logits:
//   1. logit_bias is added;
//   2. banned ids are set to -inf;
//   3. penalties: repetition (prompt and output tokens), then frequency and
//      presence (output tokens only);
//   4. temperature (below 1e-5 means greedy: stop here and take the argmax);
//   5. top_k, 6. top_p (over the top_k survivors, renormalized), 7. min_p
//      (relative to the most likely token). Each keeps every token whose
//      scaled logit is >= some threshold, so ties at a cut are all kept (as in
//      vLLM) and the three filters together are one threshold.
// NOTE: the implementation scales by 1/temperature while copying and scales
// the constants of steps 1-3 alike; (l + b) / T == l / T + b / T, and the
// repetition penalty commutes with a positive scale, so this is the same
// order up to float rounding, with one pass over the vocabulary fewer.
// Logprobs are not affected: they are the log-softmax of the RAW logits.
// Cost: a few vectorized passes over the vocabulary, no sort (top_k: a heap
// or nth_element; top_p: a weighted quickselect over the ids heavy enough to
// matter, after a histogram of their mass by weight when they are many).
class Sampler {
 public:
  // Precondition: validate(params, vocab) is OK for the vocabulary used.
  Sampler(const SamplingParams& params, uint64_t fallback_seed);

  // logits: [vocab]. prompt_tokens / output_tokens: the sequence so far (for
  // penalties). banned: ids that must not be sampled now (min_tokens not yet
  // reached => EOS and stop ids). Precondition: some id is neither banned nor
  // at -inf. Results depend only on the seed and on the calls made on this
  // sampler, never on what other sequences are in the batch.
  SampleResult sample(std::span<const float> logits, std::span<const int32_t> prompt_tokens,
                      std::span<const int32_t> output_tokens, std::span<const int32_t> banned);

  // The uniform in [0, 1) that sample() would draw next, from the same
  // generator, for sampling elsewhere (on the GPU): it consumes what one
  // sample() call would. A greedy sampler draws nothing and gets 0.
  double next_uniform();

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  SamplerScratch scratch_;
};

// Exposed for tests: the processed logits of steps 1-7 above, with filtered
// ids at -inf. With a greedy temperature only steps 1-3 are applied.
std::vector<float> sampler_process_logits(std::span<const float> logits,
                                          const SamplingParams& params,
                                          std::span<const int32_t> prompt_tokens,
                                          std::span<const int32_t> output_tokens,
                                          std::span<const int32_t> banned);

}  // namespace lagserve::runtime
