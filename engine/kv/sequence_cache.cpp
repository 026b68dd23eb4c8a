// SequenceCache: reserve before a step, advance (append, then compact) after.
#include "engine/kv/sequence_cache.h"

#include "engine/common/check.h"

namespace lagserve::kv {
namespace {

bool any_full_layer(const LagPolicy& p, int32_t n_layers) {
  for (int32_t l = 0; l < n_layers; ++l) {
    if (!p.layer_compressed(l)) return true;
  }
  return false;
}

bool any_compressed_layer(const LagPolicy& p, int32_t n_layers) {
  for (int32_t l = 0; l < n_layers; ++l) {
    if (p.layer_compressed(l)) return true;
  }
  return false;
}

int32_t ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

}  // namespace

SequenceCache::SequenceCache(const LagPolicy& policy, int32_t n_layers, int32_t block_size)
    : policy_(policy) {
  if (any_full_layer(policy, n_layers)) full_.emplace(block_size);
  if (any_compressed_layer(policy, n_layers)) compressed_group_.emplace(block_size);
}

int32_t SequenceCache::compressed_after(int32_t n_new) const {
  if (!compressed_group_) return 0;
  return std::max(compressed_, policy_.compressed_partitions(logical_len_ + n_new));
}

int32_t SequenceCache::n_blocks() const {
  int32_t n = 0;
  if (full_) n += static_cast<int32_t>(full_->block_table().size());
  if (compressed_group_) n += static_cast<int32_t>(compressed_group_->block_table().size());
  return n;
}

int32_t SequenceCache::entries_cap(const LagPolicy& policy, int32_t n_tokens) {
  const int32_t m = policy.complete_partitions(n_tokens);
  const int64_t bound = policy.sink + static_cast<int64_t>(std::max(m - 1, 0)) * policy.keep +
                        3LL * policy.lag;
  return static_cast<int32_t>(std::min<int64_t>(n_tokens, bound));
}

int32_t SequenceCache::blocks_for(const LagPolicy& policy, int32_t n_layers, int32_t block_size,
                                  int32_t n_tokens) {
  int32_t n = 0;
  if (any_full_layer(policy, n_layers)) n += ceil_div(n_tokens, block_size);
  if (any_compressed_layer(policy, n_layers)) {
    n += ceil_div(entries_cap(policy, n_tokens), block_size);
  }
  return n;
}

absl::Status SequenceCache::reserve(BlockPool& pool, int32_t n_new) {
  if (full_) {
    if (absl::Status s = full_->reserve(pool, n_new); !s.ok()) return s;
  }
  if (compressed_group_) {
    if (absl::Status s = compressed_group_->reserve(pool, n_new); !s.ok()) {
      // Give back what the full group took for this step, so nothing is held.
      if (full_) full_->evict(pool, 0);
      return s;
    }
  }
  return absl::OkStatus();
}

void SequenceCache::advance(BlockPool& pool, int32_t n_new) {
  const int32_t after = compressed_after(n_new);
  if (full_) full_->advance(n_new);
  if (compressed_group_) {
    compressed_group_->advance(n_new);
    const int32_t removed = (after - compressed_) * (policy_.lag - policy_.keep);
    compressed_group_->evict(pool, removed);
    LAGSERVE_CHECK(compressed_group_->cache_len() == policy_.retained_len(logical_len_ + n_new),
                   "compressed cache holds {} entries, the policy says {} after {} tokens",
                   compressed_group_->cache_len(), policy_.retained_len(logical_len_ + n_new),
                   logical_len_ + n_new);
  }
  compressed_ = after;
  logical_len_ += n_new;
}

void SequenceCache::release(BlockPool& pool) {
  if (full_) full_->release(pool);
  if (compressed_group_) compressed_group_->release(pool);
  logical_len_ = 0;
  compressed_ = 0;
}

}  // namespace lagserve::kv
