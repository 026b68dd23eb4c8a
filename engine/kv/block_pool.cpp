// BlockPool: a free stack and a refcount per block.
#include "engine/kv/block_pool.h"

#include <fmt/format.h>

#include "engine/common/check.h"

namespace lagserve::kv {

BlockPool::BlockPool(int32_t n_blocks) : refcount_(n_blocks, 0) {
  LAGSERVE_CHECK(n_blocks >= 2, "a block pool needs the null block and one more, got {}",
                 n_blocks);
  refcount_[0] = 1;  // the null block is permanently taken
  free_.reserve(n_blocks - 1);
  for (int32_t b = n_blocks - 1; b >= 1; --b) free_.push_back(b);
}

absl::StatusOr<std::vector<int32_t>> BlockPool::block_alloc(int32_t n) {
  LAGSERVE_CHECK(n >= 0, "negative block count {}", n);
  if (n > n_free()) {
    return absl::ResourceExhaustedError(
        fmt::format("KV cache full: {} blocks needed, {} free of {}", n, n_free(), n_blocks() - 1));
  }
  std::vector<int32_t> out(free_.end() - n, free_.end());
  free_.resize(free_.size() - n);
  for (int32_t b : out) refcount_[b] = 1;
  return out;
}

void BlockPool::block_incref(int32_t block) {
  LAGSERVE_CHECK(block > 0 && block < n_blocks() && refcount_[block] > 0,
                 "incref of block {} that is not allocated", block);
  ++refcount_[block];
}

void BlockPool::block_free(int32_t block) {
  LAGSERVE_CHECK(block > 0 && block < n_blocks() && refcount_[block] > 0,
                 "free of block {} that is not allocated", block);
  if (--refcount_[block] == 0) free_.push_back(block);
}

int32_t BlockPool::block_refcount(int32_t block) const {
  LAGSERVE_CHECK(block >= 0 && block < n_blocks(), "block {} out of range", block);
  return refcount_[block];
}

}  // namespace lagserve::kv
