// pack_examples invariants on random and hand-made inputs, and SequenceOrder:
// a permutation per epoch, different epochs and seeds, deterministic, pinned.
#include "trainer/data/pack.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace lagserve::trainer {
namespace {

constexpr int32_t kPad = -1;  // never a real token, so padding is recognisable

Example make_example(int32_t first_token, size_t n, std::mt19937_64& rng) {
  Example ex;
  for (size_t i = 0; i < n; ++i) {
    ex.tokens.push_back(first_token + static_cast<int32_t>(i));
    ex.target.push_back(i == 0 ? 0 : static_cast<uint8_t>(rng() & 1));
  }
  return ex;
}

// Checks every invariant of pack_examples for one input.
void check_packing(const std::vector<Example>& examples, int32_t seq_len) {
  const auto packed = pack_examples(examples, seq_len, kPad);
  const size_t len = static_cast<size_t>(seq_len);
  // Where each input token landed: (sequence, offset), in input order.
  std::vector<std::pair<size_t, size_t>> where;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> target;
  for (size_t s = 0; s < packed.size(); ++s) {
    ASSERT_EQ(packed[s].tokens.size(), len);
    ASSERT_EQ(packed[s].target.size(), len);
    size_t used = 0;
    while (used < len && packed[s].tokens[used] != kPad) ++used;
    ASSERT_GT(used, 0u) << "sequence " << s << " is empty";
    for (size_t i = used; i < len; ++i) {
      EXPECT_EQ(packed[s].tokens[i], kPad) << "sequence " << s << " pad at " << i;
      EXPECT_EQ(packed[s].target[i], 0) << "padding with a target in sequence " << s;
    }
    for (size_t i = 0; i < used; ++i) {
      where.emplace_back(s, i);
      tokens.push_back(packed[s].tokens[i]);
      target.push_back(packed[s].target[i]);
    }
  }
  std::vector<int32_t> want_tokens;
  std::vector<uint8_t> want_target;
  for (const Example& ex : examples) {
    want_tokens.insert(want_tokens.end(), ex.tokens.begin(), ex.tokens.end());
    want_target.insert(want_target.end(), ex.target.begin(), ex.target.end());
  }
  ASSERT_EQ(tokens, want_tokens) << "input tokens not all present in order";
  ASSERT_EQ(target, want_target);

  size_t at = 0;
  for (size_t e = 0; e < examples.size(); ++e) {
    const size_t n = examples[e].tokens.size();
    if (n == 0) continue;
    const auto [first_seq, first_offset] = where[at];
    if (n <= len) {
      EXPECT_EQ(where[at + n - 1].first, first_seq) << "example " << e << " split";
    } else {
      EXPECT_EQ(first_offset, 0u) << "long example " << e << " does not start a sequence";
      for (size_t i = 0; i < n; ++i) {
        EXPECT_EQ(where[at + i], std::make_pair(first_seq + i / len, i % len));
      }
    }
    // Greedy: a new sequence was started only when this example did not fit.
    if (e > 0 && at > 0 && first_offset == 0 && where[at - 1].first + 1 == first_seq) {
      const size_t room = len - (where[at - 1].second + 1);
      EXPECT_TRUE(n > room) << "example " << e << " (" << n << " tokens) fit in " << room;
    }
    at += n;
  }
}

TEST(PackExamples, HandMade) {
  std::mt19937_64 rng(1);
  // Lengths 3, 2, 4, 9, 1 with seq_len 4: [3][2][4][4][4][1 + 1] -> 6 sequences.
  std::vector<Example> examples;
  int32_t next = 0;
  for (size_t n : {3, 2, 4, 9, 1}) {
    examples.push_back(make_example(next, n, rng));
    next += 100;
  }
  examples[3].target[4] = 1;  // first token of the long example's second piece
  const auto packed = pack_examples(examples, 4, kPad);
  ASSERT_EQ(packed.size(), 6u);
  EXPECT_EQ(packed[0].tokens, (std::vector<int32_t>{0, 1, 2, kPad}));
  EXPECT_EQ(packed[1].tokens, (std::vector<int32_t>{100, 101, kPad, kPad}));
  EXPECT_EQ(packed[2].tokens, (std::vector<int32_t>{200, 201, 202, 203}));
  EXPECT_EQ(packed[3].tokens, (std::vector<int32_t>{300, 301, 302, 303}));
  EXPECT_EQ(packed[4].tokens, (std::vector<int32_t>{304, 305, 306, 307}));
  EXPECT_EQ(packed[4].target[0], 1) << "a later piece's first token keeps its target";
  EXPECT_EQ(packed[5].tokens, (std::vector<int32_t>{308, 400, kPad, kPad}));
  check_packing(examples, 4);
}

TEST(PackExamples, RandomInputsKeepInvariants) {
  std::mt19937_64 rng(7);
  for (int32_t seq_len : {2, 3, 16, 64}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<Example> examples;
      const size_t n_examples = 1 + rng() % 40;
      for (size_t e = 0; e < n_examples; ++e) {
        const size_t kind = rng() % 4;
        const size_t n = kind == 0   ? static_cast<size_t>(seq_len)
                         : kind == 1 ? 1 + rng() % (3 * seq_len)
                                     : 1 + rng() % seq_len;
        examples.push_back(make_example(static_cast<int32_t>(e) * 1000, n, rng));
      }
      if (trial == 0) examples.push_back(Example{});  // empty examples are skipped
      check_packing(examples, seq_len);
    }
  }
}

TEST(PackExamples, NothingInNothingOut) {
  EXPECT_TRUE(pack_examples({}, 8, 0).empty());
  EXPECT_TRUE(pack_examples({Example{}}, 8, 0).empty());
}

TEST(SequenceOrder, EachEpochIsAPermutation) {
  for (size_t n : {1, 2, 7, 100, 1000}) {
    const SequenceOrder order(n, 1234);
    EXPECT_EQ(order.size(), n);
    for (uint64_t epoch = 0; epoch < 3; ++epoch) {
      std::vector<size_t> seen;
      for (uint64_t p = epoch * n; p < (epoch + 1) * n; ++p) seen.push_back(order.at(p));
      EXPECT_EQ(seen, order.epoch_order(epoch));
      std::sort(seen.begin(), seen.end());
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], i) << "n=" << n << " epoch=" << epoch;
    }
  }
}

TEST(SequenceOrder, EpochsAndSeedsDiffer) {
  const size_t n = 100;
  const SequenceOrder order(n, 5);
  std::set<std::vector<size_t>> epochs;
  for (uint64_t e = 0; e < 5; ++e) epochs.insert(order.epoch_order(e));
  EXPECT_EQ(epochs.size(), 5u);
  EXPECT_NE(SequenceOrder(n, 6).epoch_order(0), order.epoch_order(0));
  std::vector<size_t> identity(n);
  for (size_t i = 0; i < n; ++i) identity[i] = i;
  EXPECT_NE(order.epoch_order(0), identity);
}

TEST(SequenceOrder, DeterministicAndRandomAccess) {
  const SequenceOrder a(37, 99);
  const SequenceOrder b(37, 99);
  std::vector<uint64_t> positions;
  for (uint64_t p = 0; p < 37 * 4; ++p) positions.push_back(p);
  std::vector<size_t> sequential;
  for (uint64_t p : positions) sequential.push_back(a.at(p));
  // Resuming anywhere (a fresh object, positions in any order) gives the same.
  std::shuffle(positions.begin(), positions.end(), std::mt19937(3));
  for (uint64_t p : positions) EXPECT_EQ(b.at(p), sequential[p]) << p;
  const SequenceOrder copy(a);
  EXPECT_EQ(copy.at(100), sequential[100]);
}

TEST(SequenceOrder, PinnedOrderIsPortable) {
  // Pinned output of mt19937_64 + our Fisher-Yates: a change here means
  // every resumed training run would visit data in a different order.
  const SequenceOrder order(10, 42);
  EXPECT_EQ(order.epoch_order(0), (std::vector<size_t>{9, 6, 2, 0, 1, 4, 3, 8, 5, 7}));
  EXPECT_EQ(order.epoch_order(1), (std::vector<size_t>{5, 4, 1, 3, 0, 2, 7, 8, 6, 9}));
}

TEST(SequenceOrder, FirstPickIsUniform) {
  // Over many seeds, each of 4 sequences comes first about a quarter of the time.
  std::vector<int> first(4, 0);
  const int trials = 8000;
  for (int seed = 0; seed < trials; ++seed) ++first[SequenceOrder(4, seed).at(0)];
  for (int count : first) EXPECT_NEAR(count, trials / 4, trials / 4 / 10);
}

}  // namespace
}  // namespace lagserve::trainer
