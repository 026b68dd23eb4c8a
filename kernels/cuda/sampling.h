// Token sampling on the GPU for a batch of logits rows: logit bias, bans,
// penalties, temperature, top-k / top-p / min-p and a draw at a given uniform,
// with the semantics of runtime::sampler_process_logits (engine/runtime/sampler.h),
// which is its reference. One CTA per row; no sort: the top-k and top-p cuts
// are found by a radix select over the float values.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace lagserve::kernels::cuda {

// One row's parameters (vLLM semantics, as runtime::SamplingParams), in device
// memory, one per row.
struct SamplingRowParams {
  float temperature = 1.0f;         // < 1e-5: greedy (argmax, ties -> lower id)
  int32_t top_k = 0;                // <= 0 or >= vocab: off
  float top_p = 1.0f;               // (0, 1]; 1: off
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; prompt and output tokens
  float presence_penalty = 0.0f;    // output tokens
  float frequency_penalty = 0.0f;   // output tokens, times their count
};

// Per-row token lists in CSR form (device pointers): row r's entries are
// [offsets[r], offsets[r + 1]) of the arrays beside offsets ([n_rows + 1]
// offsets). A null offsets pointer means the list is empty for every row.
// Every id must lie in [0, vocab).
struct SamplingTokenLists {
  // The prompt, repeats allowed (each id is penalized once).
  const int32_t* prompt_offsets = nullptr;
  const int32_t* prompt_ids = nullptr;
  // The output so far as (id, count) pairs: ids unique within a row, count >= 1
  // the number of times the id occurs in the output. NOTE: counts are given
  // rather than derived here because the runtime can keep them per sequence
  // incrementally, and a GPU count per id would need a vocab-sized buffer.
  const int32_t* output_offsets = nullptr;
  const int32_t* output_ids = nullptr;
  const int32_t* output_counts = nullptr;
  // logit_bias: (id, bias) added in list order (repeats add up).
  const int32_t* bias_offsets = nullptr;
  const int32_t* bias_ids = nullptr;
  const float* bias_values = nullptr;
  // Ids that must not be sampled now (set to -inf).
  const int32_t* banned_offsets = nullptr;
  const int32_t* banned_ids = nullptr;
};

// processed[r, :] = the processed logits of row r (steps 1-7 of
// runtime::Sampler: bias, bans, penalties, scale by 1 / temperature, and the
// top-k / top-p / min-p cut with the filtered ids at -inf; with a greedy
// temperature only bias, bans and penalties). logits and processed are
// [n_rows, vocab] and may be the same buffer (in place).
// Preconditions: no NaN in logits; some id of each row is neither banned nor
// -inf; vocab >= 1.
void sampling_process_logits(const float* logits, int32_t n_rows, int32_t vocab,
                             const SamplingRowParams* params, const SamplingTokenLists& lists,
                             float* processed, cudaStream_t stream);

// As sampling_process_logits (processed holds the processed logits on
// return), and tokens[r] = the chosen id of row r: the argmax (ties -> lower
// id) for a greedy row, else the inverse CDF at u[r] (in [0, 1)) of the
// processed distribution walked in ascending id order: the smallest id i with
// u * Z < sum_{j <= i} p_j, p_j = exp(processed_j - max), Z their sum.
// NOTE: the masses are summed in 2^-40 fixed point (exact, so the result does
// not depend on the order of summation); a token whose weight is below 2^-40
// of the most likely one's is never drawn.
void sampling_sample(const float* logits, int32_t n_rows, int32_t vocab,
                     const SamplingRowParams* params, const SamplingTokenLists& lists,
                     const float* u, float* processed, int32_t* tokens, cudaStream_t stream);

// tokens[r] = the argmax of row r (ties -> lower id): sampling_sample's
// result for greedy rows without bias, bans or penalties, with each row
// spread over many CTAs (sampling_sample gives a row one CTA). keys: device
// scratch of n_rows. Precondition: no NaN in logits.
void sampling_argmax(const float* logits, int32_t n_rows, int32_t vocab, unsigned long long* keys,
                     int32_t* tokens, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
