// Per-sequence KV bookkeeping: the block table and the two lengths that
// eviction keeps apart (DESIGN.md section 1, Positions). Without eviction the
// cache length equals the logical length.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/kv/block_pool.h"

namespace lagserve::kv {

class SequenceKv {
 public:
  explicit SequenceKv(int32_t block_size) : block_size_(block_size) {}
  SequenceKv(const SequenceKv&) = delete;
  SequenceKv& operator=(const SequenceKv&) = delete;
  SequenceKv(SequenceKv&&) = default;
  ~SequenceKv();

  int32_t logical_len() const { return logical_len_; }  // next position id
  int32_t cache_len() const { return cache_len_; }      // cached entries
  const std::vector<int32_t>& block_table() const { return blocks_; }

  // Makes room for n_new more cache entries, taking blocks from the pool;
  // ResourceExhausted (and nothing taken) when the pool is short.
  absl::Status reserve(BlockPool& pool, int32_t n_new);
  // Records that n_new tokens were processed and cached.
  void advance(int32_t n_new);
  // Records that compaction removed n_removed cache entries (the logical
  // length stays) and returns the blocks past the new end to the pool.
  void evict(BlockPool& pool, int32_t n_removed);
  // Returns every block to the pool and empties the sequence.
  void release(BlockPool& pool);

 private:
  int32_t block_size_;
  int32_t logical_len_ = 0;
  int32_t cache_len_ = 0;
  std::vector<int32_t> blocks_;
};

}  // namespace lagserve::kv
