// BlockPool and SequenceKv: the null block is never handed out, exhaustion is
// a status that takes nothing, refcounts, and every block comes back.
#include "engine/kv/block_pool.h"

#include <set>

#include <gtest/gtest.h>

#include "engine/kv/sequence_kv.h"

namespace lagserve::kv {
namespace {

TEST(BlockPool, NeverHandsOutNullBlockAndExhaustsCleanly) {
  BlockPool pool(5);
  EXPECT_EQ(pool.n_free(), 4);
  auto a = pool.block_alloc(3);
  ASSERT_TRUE(a.ok());
  std::set<int32_t> got(a->begin(), a->end());
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(got.count(0), 0u);
  auto b = pool.block_alloc(2);
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.n_free(), 1);  // the failed call took nothing
  for (int32_t id : *a) pool.block_free(id);
  EXPECT_EQ(pool.n_free(), 4);
}

TEST(BlockPool, RefcountKeepsSharedBlock) {
  BlockPool pool(3);
  auto a = pool.block_alloc(1);
  ASSERT_TRUE(a.ok());
  const int32_t id = (*a)[0];
  pool.block_incref(id);
  pool.block_free(id);
  EXPECT_EQ(pool.block_refcount(id), 1);
  EXPECT_EQ(pool.n_free(), 1);
  pool.block_free(id);
  EXPECT_EQ(pool.n_free(), 2);
}

TEST(BlockPoolDeath, DoubleFreeIsABug) {
  BlockPool pool(3);
  auto a = pool.block_alloc(1);
  ASSERT_TRUE(a.ok());
  pool.block_free((*a)[0]);
  EXPECT_DEATH(pool.block_free((*a)[0]), "not allocated");
}

TEST(SequenceKv, GrowsByBlocksAndReleasesAll) {
  BlockPool pool(10);
  SequenceKv seq(4);
  ASSERT_TRUE(seq.reserve(pool, 5).ok());
  EXPECT_EQ(seq.block_table().size(), 2u);
  seq.advance(5);
  ASSERT_TRUE(seq.reserve(pool, 3).ok());  // 8 entries still fit in 2 blocks
  EXPECT_EQ(seq.block_table().size(), 2u);
  seq.advance(3);
  EXPECT_EQ(seq.logical_len(), 8);
  EXPECT_EQ(seq.cache_len(), 8);
  EXPECT_EQ(seq.reserve(pool, 100).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(seq.block_table().size(), 2u);
  seq.release(pool);
  EXPECT_EQ(pool.n_used(), 0);
}

}  // namespace
}  // namespace lagserve::kv
