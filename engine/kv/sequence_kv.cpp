// SequenceKv: grows its block table on demand, gives blocks back on release.
#include "engine/kv/sequence_kv.h"

#include "engine/common/check.h"

namespace lagserve::kv {

SequenceKv::~SequenceKv() {
  LAGSERVE_CHECK(blocks_.empty(), "SequenceKv destroyed holding {} blocks; release() first",
                 blocks_.size());
}

absl::Status SequenceKv::reserve(BlockPool& pool, int32_t n_new) {
  const int64_t need_entries = static_cast<int64_t>(cache_len_) + n_new;
  const int64_t need_blocks = (need_entries + block_size_ - 1) / block_size_;
  const int64_t more = need_blocks - static_cast<int64_t>(blocks_.size());
  if (more <= 0) return absl::OkStatus();
  auto got = pool.block_alloc(static_cast<int32_t>(more));
  if (!got.ok()) return got.status();
  blocks_.insert(blocks_.end(), got->begin(), got->end());
  return absl::OkStatus();
}

void SequenceKv::advance(int32_t n_new) {
  LAGSERVE_CHECK(static_cast<int64_t>(cache_len_ + n_new) <=
                     static_cast<int64_t>(blocks_.size()) * block_size_,
                 "advance by {} past the reserved {} blocks", n_new, blocks_.size());
  logical_len_ += n_new;
  cache_len_ += n_new;
}

void SequenceKv::evict(BlockPool& pool, int32_t n_removed) {
  LAGSERVE_CHECK(n_removed >= 0 && n_removed <= cache_len_, "evict {} of {} entries", n_removed,
                 cache_len_);
  cache_len_ -= n_removed;
  const size_t keep = static_cast<size_t>((cache_len_ + block_size_ - 1) / block_size_);
  while (blocks_.size() > keep) {
    pool.block_free(blocks_.back());
    blocks_.pop_back();
  }
}

void SequenceKv::release(BlockPool& pool) {
  for (int32_t b : blocks_) pool.block_free(b);
  blocks_.clear();
  logical_len_ = 0;
  cache_len_ = 0;
}

}  // namespace lagserve::kv
