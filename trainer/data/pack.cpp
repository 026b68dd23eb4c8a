// Greedy in-order packing of examples into fixed-length sequences, and the
// seeded epoch-wise permutation used to visit them.
#include "trainer/data/pack.h"

#include <algorithm>
#include <random>

#include "engine/common/check.h"
#include "trainer/data/random.h"

namespace lagserve::trainer {
namespace {

class Packer {
 public:
  Packer(int32_t seq_len, int32_t pad_id)
      : seq_len_(static_cast<size_t>(seq_len)), pad_id_(pad_id) {}

  size_t room() const { return seq_len_ - current_.tokens.size(); }

  // Appends tokens [begin, end) of ex; they must fit in the open sequence.
  void append(const Example& ex, size_t begin, size_t end) {
    LAGSERVE_CHECK(end - begin <= room(), "piece of {} tokens overflows ({} left)", end - begin,
                   room());
    current_.tokens.insert(current_.tokens.end(), ex.tokens.begin() + begin,
                           ex.tokens.begin() + end);
    current_.target.insert(current_.target.end(), ex.target.begin() + begin,
                           ex.target.begin() + end);
    if (room() == 0) flush();
  }

  // Closes the open sequence (if any), padding it to seq_len.
  void flush() {
    if (current_.tokens.empty()) return;
    current_.tokens.resize(seq_len_, pad_id_);
    current_.target.resize(seq_len_, 0);
    done_.push_back(std::move(current_));
    current_ = {};
  }

  std::vector<PackedSequence> finish() {
    flush();
    return std::move(done_);
  }

 private:
  size_t seq_len_;
  int32_t pad_id_;
  PackedSequence current_;
  std::vector<PackedSequence> done_;
};

}  // namespace

std::vector<PackedSequence> pack_examples(const std::vector<Example>& examples, int32_t seq_len,
                                          int32_t pad_id) {
  LAGSERVE_CHECK(seq_len >= 2, "pack_examples needs seq_len >= 2, got {}", seq_len);
  const size_t len = static_cast<size_t>(seq_len);
  Packer packer(seq_len, pad_id);
  for (size_t e = 0; e < examples.size(); ++e) {
    const Example& ex = examples[e];
    LAGSERVE_CHECK(ex.tokens.size() == ex.target.size(),
                   "example {} has {} tokens but {} target flags", e, ex.tokens.size(),
                   ex.target.size());
    const size_t n = ex.tokens.size();
    if (n == 0) continue;
    if (n <= len) {
      if (n > packer.room()) packer.flush();
      packer.append(ex, 0, n);
      continue;
    }
    // Too long for any sequence: whole pieces from a fresh sequence, the rest
    // left open for the next examples.
    packer.flush();
    for (size_t begin = 0; begin < n; begin += len)
      packer.append(ex, begin, std::min(n, begin + len));
  }
  return packer.finish();
}

SequenceOrder::SequenceOrder(size_t n, uint64_t seed) : n_(n), seed_(seed) {
  LAGSERVE_CHECK(n > 0, "SequenceOrder over zero sequences");
}

std::vector<size_t> SequenceOrder::epoch_order(uint64_t epoch) const {
  std::vector<size_t> order(n_);
  for (size_t i = 0; i < n_; ++i) order[i] = i;
  std::mt19937_64 rng(mix_seed(seed_ ^ mix_seed(epoch)));
  // Fisher-Yates: position i takes a uniform pick among [0, i].
  for (size_t i = n_ - 1; i > 0; --i) std::swap(order[i], order[uniform_below(rng, i + 1)]);
  return order;
}

size_t SequenceOrder::at(uint64_t position) const {
  const uint64_t epoch = position / n_;
  std::lock_guard<std::mutex> lock(mutex_);
  if (cached_order_.empty() || cached_epoch_ != epoch) {
    cached_order_ = epoch_order(epoch);
    cached_epoch_ = epoch;
  }
  return cached_order_[position % n_];
}

}  // namespace lagserve::trainer
