// The Backend interface: run one step of the model over a batch of sequences.
// The scheduler decides who runs; the backend only computes (DESIGN.md 2).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv/lag_policy.h"
#include "engine/kv/sequence_cache.h"
#include "engine/model/model_config.h"

namespace lagserve::backend {

// Sampling on the device, for backends that can (Backend::samples_on_device):
// runtime::Sampler's inputs for one sequence's last row, with the uniform draw
// taken on the host from the sequence's own seeded generator, so that a
// seeded request replays. The spans must outlive the step() call.
struct DeviceSampling {
  float temperature = 1.0f;  // < 1e-5: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float u = 0.0f;                              // in [0, 1); unused when greedy
  std::span<const int32_t> prompt_tokens;      // read only with a repetition penalty
  std::span<const int32_t> output_ids;         // the output so far: unique ids ...
  std::span<const int32_t> output_counts;      // ... and their counts (penalties)
  std::span<const int32_t> bias_ids;           // logit_bias, in order
  std::span<const float> bias_values;
  std::span<const int32_t> banned;             // ids that must not be sampled now
};

// One sequence's share of a step: a prefill chunk or one decode token.
struct SequenceStep {
  std::span<const int32_t> tokens;       // new tokens, [n_new]
  int32_t first_position = 0;            // position id of tokens[0]
  // Layers with the whole cache (every layer without a policy):
  int32_t cache_len = 0;                 // entries already cached (before this step)
  std::span<const int32_t> block_table;  // covers cache_len + n_new entries
  bool all_logits = false;               // logits of every new token, not just the last

  // LagKV (DESIGN.md section 1). Layers the policy compresses keep their own
  // cache group. Partitions [compressed_before, compressed_after) are scored
  // in this step (their reference partition completes here), hidden from the
  // queries that may see only their Selected set, and compacted at its end.
  const kv::LagPolicy* policy = nullptr;  // null or disabled: no compression
  int32_t lag_cache_len = 0;
  std::span<const int32_t> lag_block_table;  // covers lag_cache_len + n_new entries
  int32_t compressed_before = 0;
  int32_t compressed_after = 0;
  bool trace_evictions = false;  // report the positions kept by each compaction
  // Set (on a backend that samples on the device): StepOutput::tokens gets the
  // token sampled from this sequence's last row. Precondition: !all_logits.
  const DeviceSampling* sampling = nullptr;
  // False: the caller does not read this sequence's logits (it samples on the
  // device, or is mid-prompt). When no sequence of a batch needs them,
  // StepOutput::logits may be left empty (no download).
  bool need_logits = true;

  // A step without compression: every layer uses the one (full) cache group.
  static SequenceStep uncompressed(std::span<const int32_t> tokens, int32_t first_position,
                                   int32_t cache_len, std::span<const int32_t> block_table,
                                   bool all_logits) {
    SequenceStep s;
    s.tokens = tokens;
    s.first_position = first_position;
    s.cache_len = cache_len;
    s.block_table = block_table;
    s.all_logits = all_logits;
    return s;
  }

  // The step that runs `tokens` next for a sequence with this cache: its
  // groups' lengths and block tables, and the compactions the step makes due.
  // Precondition: cache.reserve(pool, tokens.size()) succeeded.
  static SequenceStep from_cache(const kv::SequenceCache& cache, std::span<const int32_t> tokens,
                                 bool all_logits = false, bool trace_evictions = false) {
    SequenceStep s;
    s.tokens = tokens;
    s.first_position = cache.logical_len();
    s.all_logits = all_logits;
    if (cache.has_full()) {
      s.cache_len = cache.full().cache_len();
      s.block_table = cache.full().block_table();
    }
    if (cache.has_compressed()) {
      s.policy = &cache.policy();
      s.lag_cache_len = cache.compressed().cache_len();
      s.lag_block_table = cache.compressed().block_table();
      s.compressed_before = cache.compressed_partitions();
      s.compressed_after = cache.compressed_after(static_cast<int32_t>(tokens.size()));
      s.trace_evictions = trace_evictions;
    }
    return s;
  }

  bool compressed_layer(int32_t layer) const {
    return policy != nullptr && policy->layer_compressed(layer);
  }
};

// The positions one compaction kept, for --trace-evictions.
struct EvictionRecord {
  int32_t seq = 0;  // index in the batch
  int32_t layer = 0;
  int32_t kv_head = 0;
  int32_t partition = 0;
  std::vector<int32_t> kept_positions;  // ascending
};

struct StepBatch {
  std::vector<SequenceStep> seqs;
};

struct StepOutput {
  // Rows of logits, [n_rows, vocab]: per sequence in batch order, one row (the
  // last token) or n_new rows when all_logits was asked.
  std::vector<float> logits;
  std::vector<int32_t> row_begin;  // first row of each sequence, [n_seqs + 1]
  int32_t vocab_size = 0;
  std::vector<EvictionRecord> evictions;  // when a sequence asked for a trace
  // Per sequence in batch order: the token sampled on the device, -1 where
  // the step asked for none. Empty when no sequence asked.
  std::vector<int32_t> tokens;

  std::span<const float> row(int32_t r) const {
    return {logits.data() + static_cast<size_t>(r) * vocab_size, static_cast<size_t>(vocab_size)};
  }
  // The last logits row of sequence s.
  std::span<const float> last_row(int32_t s) const { return row(row_begin[s + 1] - 1); }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const model::ModelConfig& config() const = 0;
  virtual int32_t block_size() const = 0;
  // Blocks in the cache storage, the null block 0 included.
  virtual int32_t n_blocks() const = 0;
  // Appends the new tokens' K/V into the cache and returns logits (and the
  // tokens sampled on the device, see SequenceStep::sampling).
  // Precondition: every block table covers cache_len + n_new entries.
  virtual absl::StatusOr<StepOutput> step(const StepBatch& batch) = 0;
  // Whether step() honours SequenceStep::sampling.
  virtual bool samples_on_device() const { return false; }
};

// Bytes of K and V cache that one token takes across all layers (fp32).
inline int64_t kv_bytes_per_token(const model::ModelConfig& c) {
  return 2LL * c.n_layers * c.kv_dim() * static_cast<int64_t>(sizeof(float));
}

}  // namespace lagserve::backend
