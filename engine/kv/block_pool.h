// The pool of KV blocks, allocated up front. Block ids index the backend's
// cache storage; block 0 is reserved as the null block (never handed out), so
// a zero in a block table is always a bug that reads harmless memory.
// Blocks are refcounted so that later prefix sharing can hold one block twice.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::kv {

class BlockPool {
 public:
  // n_blocks counts the null block: n_blocks - 1 are usable. Precondition: n_blocks >= 2.
  explicit BlockPool(int32_t n_blocks);

  int32_t n_blocks() const { return static_cast<int32_t>(refcount_.size()); }
  int32_t n_free() const { return static_cast<int32_t>(free_.size()); }
  int32_t n_used() const { return n_blocks() - 1 - n_free(); }

  // Takes n free blocks (refcount 1), or ResourceExhausted and takes none.
  absl::StatusOr<std::vector<int32_t>> block_alloc(int32_t n);
  void block_incref(int32_t block);
  // Drops one reference; the block is free again when none are left.
  void block_free(int32_t block);
  int32_t block_refcount(int32_t block) const;

 private:
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
};

}  // namespace lagserve::kv
