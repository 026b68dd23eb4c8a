// Packing examples into fixed-length training sequences, and the
// deterministic, resumable epoch-wise order in which they are visited.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "trainer/data/example.h"

namespace lagserve::trainer {

// Fixed-length training sequences: tokens and target of exactly seq_len entries.
struct PackedSequence {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> target;
};

// Greedy in-order packing: examples are concatenated into sequences of
// seq_len tokens; an example that fits (<= seq_len) is never split across two
// sequences (a new sequence is started instead); an example longer than
// seq_len is cut into consecutive seq_len pieces (the first token of each
// later piece keeps its target flag), and its last, shorter piece starts a
// sequence that later examples may join. The tail of each sequence is padded
// with pad_id and target 0. Empty examples are skipped.
// NOTE: examples packed together attend to each other; an example's own first
// token has target 0, so no loss crosses a boundary.
// Precondition: seq_len >= 2.
std::vector<PackedSequence> pack_examples(const std::vector<Example>& examples, int32_t seq_len,
                                          int32_t pad_id);

// Deterministic epoch-wise shuffled order over n sequences: position p
// (0, 1, 2, ...) maps to epoch p / n, index perm_{seed,epoch}[p % n]. The
// sampler's state is just the position (for checkpoint/resume). The
// permutations come from std::mt19937_64 and a hand-written Fisher-Yates, so
// they are the same with every compiler and standard library.
class SequenceOrder {
 public:
  // Precondition: n > 0.
  SequenceOrder(size_t n, uint64_t seed);
  SequenceOrder(const SequenceOrder& other) : SequenceOrder(other.n_, other.seed_) {}
  SequenceOrder& operator=(const SequenceOrder&) = delete;

  // The sequence index to visit at this position. Thread-safe; the current
  // epoch's permutation is cached, so sequential positions cost O(1).
  size_t at(uint64_t position) const;
  size_t size() const { return n_; }
  uint64_t seed() const { return seed_; }
  // The whole permutation of one epoch.
  std::vector<size_t> epoch_order(uint64_t epoch) const;

 private:
  size_t n_;
  uint64_t seed_;
  mutable std::mutex mutex_;
  mutable uint64_t cached_epoch_ = 0;
  mutable std::vector<size_t> cached_order_;  // permutation of cached_epoch_; empty until used
};

}  // namespace lagserve::trainer
