// A sequence's KV cache under a LagPolicy: one SequenceKv per layer group
// (compressed layers, and full layers for skip_layers or a disabled policy),
// and the compaction bookkeeping of DESIGN.md section 1. No tensors here: the
// backend moves the entries, this class keeps the counts and the blocks.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/lag_policy.h"
#include "engine/kv/sequence_kv.h"

namespace lagserve::kv {

class SequenceCache {
 public:
  // n_layers: the model's layers (to know whether any layer keeps a full cache).
  SequenceCache(const LagPolicy& policy, int32_t n_layers, int32_t block_size);
  SequenceCache(SequenceCache&&) = default;

  const LagPolicy& policy() const { return policy_; }
  int32_t logical_len() const { return logical_len_; }
  // Partitions of the compressed group already reduced to their Selected set.
  int32_t compressed_partitions() const { return compressed_; }

  bool has_full() const { return full_.has_value(); }
  bool has_compressed() const { return compressed_group_.has_value(); }
  const SequenceKv& full() const { return *full_; }
  const SequenceKv& compressed() const { return *compressed_group_; }

  // Partitions compressed once n_new more tokens are processed.
  int32_t compressed_after(int32_t n_new) const;
  // Blocks this sequence holds, all groups together.
  int32_t n_blocks() const;
  // Most entries the compressed group may hold, mid-step, for a sequence of
  // n_tokens: the retained-length bound S + (m-1)k + 2L plus one partition
  // of new tokens (the scheduler keeps each step within it).
  static int32_t entries_cap(const LagPolicy& policy, int32_t n_tokens);
  // Blocks needed to hold `n_tokens` tokens from empty, all groups together,
  // counting a step's peak (before its compaction). The scheduler admits by it.
  static int32_t blocks_for(const LagPolicy& policy, int32_t n_layers, int32_t block_size,
                            int32_t n_tokens);

  // Makes room for n_new more tokens in every group (before compaction);
  // ResourceExhausted and nothing taken when the pool is short.
  absl::Status reserve(BlockPool& pool, int32_t n_new);
  // Records a processed step of n_new tokens: appends them, then applies the
  // compaction the step made due, returning freed blocks to the pool.
  void advance(BlockPool& pool, int32_t n_new);
  // Returns every block; the sequence starts over (preemption by recompute).
  void release(BlockPool& pool);

 private:
  LagPolicy policy_;
  int32_t logical_len_ = 0;
  int32_t compressed_ = 0;
  std::optional<SequenceKv> full_;
  std::optional<SequenceKv> compressed_group_;
};

}  // namespace lagserve::kv
