// The engine with many sequences: batch invariance (16 prompts together give
// each the greedy output it gets alone, with the policy off and on), forced
// preemption (a cache too small for all of them: outputs still equal, and the
// preemptions happened), cancellation, and pool accounting (every block free
// at the end).
#include "engine/runtime/engine.h"

#include <filesystem>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/sequence_cache.h"
#include "engine/model/model.h"
#include "tests/common/test_backend.h"

namespace lagserve::runtime {
namespace {

namespace fs = std::filesystem;

const model::Model& tiny_model() {
  static std::unique_ptr<model::Model> m = [] {
    auto r = model::load_model(
        (fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models/tiny-qwen2").string());
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }();
  return *m;
}

std::vector<Request> make_requests(int n, const std::string& policy, int vocab) {
  std::mt19937 rng(99);
  std::vector<Request> reqs;
  for (int i = 0; i < n; ++i) {
    Request r;
    r.id = "r" + std::to_string(i);
    const int len = 5 + static_cast<int>(rng() % 60);
    for (int t = 0; t < len; ++t) r.prompt.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    r.sampling.temperature = 0;
    r.stop.max_tokens = 10 + static_cast<int>(rng() % 30);
    r.stop.ignore_eos = true;
    if (!policy.empty()) r.lagkv = *kv::LagPolicy::parse(policy);
    reqs.push_back(std::move(r));
  }
  return reqs;
}

struct RunResult {
  std::map<std::string, std::vector<int32_t>> tokens;
  EngineStats stats;
  int blocks_used_at_end = -1;
};

RunResult run_all(const model::Model& m, const std::vector<Request>& reqs, int64_t kv_bytes,
                  int max_batched_tokens = 256) {
  backend::CpuBackendOptions opt;
  opt.block_size = 4;
  opt.kv_cache_bytes = kv_bytes;
  opt.poison_kv = true;
  auto be = testing_util::make_test_backend(m, opt);
  EXPECT_TRUE(be.ok()) << be.status();
  EngineConfig cfg;
  cfg.max_batched_tokens = max_batched_tokens;
  Engine engine(**be, *m.tokenizer, cfg);
  for (const Request& r : reqs) EXPECT_TRUE(engine.add_request(r).ok());
  RunResult res;
  while (engine.has_work()) {
    auto outs = engine.step();
    EXPECT_TRUE(outs.ok()) << outs.status();
    for (const RequestOutput& o : *outs) {
      auto& v = res.tokens[o.id];
      v.insert(v.end(), o.tokens.begin(), o.tokens.end());
      if (o.finished()) {
        EXPECT_EQ(o.finish, FinishReason::Length) << o.id << " " << o.error;
      }
    }
  }
  res.stats = engine.stats();
  res.blocks_used_at_end = engine.pool().n_used();
  return res;
}

class EngineBatch : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineBatch, TogetherEqualsAloneAndFreesEverything) {
  const model::Model& m = tiny_model();
  const auto reqs = make_requests(16, GetParam(), m.config.vocab_size);
  const RunResult together = run_all(m, reqs, 8 << 20);
  EXPECT_EQ(together.blocks_used_at_end, 0);
  EXPECT_EQ(together.stats.n_preemptions, 0);
  for (const Request& r : reqs) {
    const RunResult alone = run_all(m, {r}, 8 << 20);
    ASSERT_EQ(together.tokens.at(r.id).size(), static_cast<size_t>(r.stop.max_tokens));
    EXPECT_EQ(together.tokens.at(r.id), alone.tokens.at(r.id)) << r.id;
  }
}

TEST_P(EngineBatch, ForcedPreemptionKeepsOutputs) {
  const model::Model& m = tiny_model();
  const auto reqs = make_requests(16, GetParam(), m.config.vocab_size);
  const RunResult roomy = run_all(m, reqs, 8 << 20);
  // Pools from just the largest request's whole footprint upward: requests
  // are admitted while the running ones are short, then outgrow the pool.
  int32_t max_blocks = 0;
  for (const Request& r : reqs) {
    max_blocks = std::max(max_blocks, kv::SequenceCache::blocks_for(
                                          r.lagkv.value_or(kv::LagPolicy{}), m.config.n_layers, 4,
                                          static_cast<int32_t>(r.prompt.size()) + r.stop.max_tokens));
  }
  int64_t preemptions = 0;
  for (int32_t blocks = max_blocks + 1; blocks <= 3 * max_blocks && preemptions < 3; ++blocks) {
    // 2 layers x 2 KV heads x 16 dims x 2 (K, V) x 4 bytes = 512 bytes a token;
    // one more block for the null block.
    const RunResult tight = run_all(m, reqs, (blocks + 1) * 4 * 512);
    preemptions += tight.stats.n_preemptions;
    EXPECT_EQ(tight.blocks_used_at_end, 0);
    for (const Request& r : reqs) {
      EXPECT_EQ(tight.tokens.at(r.id), roomy.tokens.at(r.id)) << r.id << ", " << blocks << " blocks";
    }
  }
  EXPECT_GT(preemptions, 0) << "no pool size forced a preemption";
}

INSTANTIATE_TEST_SUITE_P(Policy, EngineBatch,
                         ::testing::Values("", "sink=4,lag=8,keep=2", "sink=2,lag=5,ratio=0.4,skip_layers=0"),
                         [](const auto& info) {
                           return info.param.empty() ? std::string("off")
                                                     : "on" + std::to_string(info.index);
                         });

// The default model: 16 prompts together against each alone. Where a token
// differs, the run alone must show a near-tie there (top-2 logit gap < 1e-3):
// a different fp32 summation order may flip it, a different cache may not.
class DefaultModelBatch : public ::testing::TestWithParam<std::string> {};

TEST_P(DefaultModelBatch, TogetherEqualsAloneUpToNearTies) {
  if (!model::resolve_model_path("default").ok()) GTEST_SKIP() << "no default model";
  static std::unique_ptr<model::Model> m = std::move(*model::load_model("default"));
  backend::CpuBackendOptions opt;
  opt.kv_cache_bytes = 256 << 20;
  auto be = testing_util::make_test_backend(*m, opt);
  ASSERT_TRUE(be.ok());
  const std::vector<std::string> texts = {
      "The history of the printing press begins", "def quicksort(xs):", "Once upon a time, in a",
      "The three primary colors are", "Water boils at", "List of planets: Mercury,",
      "In 1969, astronauts", "The best way to learn a language is", "Photosynthesis is the",
      "SELECT name FROM users WHERE", "A haiku about autumn:", "The capital of Japan is",
      "Dear hiring manager, I am writing to", "1, 1, 2, 3, 5, 8,", "The mitochondria is",
      "To make bread you need flour, water,"};
  std::vector<Request> reqs;
  for (size_t i = 0; i < texts.size(); ++i) {
    Request r;
    r.id = "d" + std::to_string(i);
    // Repeat the text so that prompts span several partitions.
    std::string text;
    for (size_t k = 0; k <= i % 4; ++k) text += texts[i] + " ";
    r.prompt = m->tokenizer->encode(text, false);
    r.sampling.temperature = 0;
    r.sampling.logprobs = 2;
    r.stop.max_tokens = 16;
    r.stop.ignore_eos = true;
    if (!GetParam().empty()) r.lagkv = *kv::LagPolicy::parse(GetParam());
    reqs.push_back(std::move(r));
  }
  auto run = [&](const std::vector<Request>& batch) {
    Engine engine(**be, *m->tokenizer, {});
    for (const Request& r : batch) EXPECT_TRUE(engine.add_request(r).ok());
    std::map<std::string, std::vector<SampleResult>> out;
    while (engine.has_work()) {
      auto outs = engine.step();
      EXPECT_TRUE(outs.ok());
      for (const auto& o : *outs) {
        out[o.id].insert(out[o.id].end(), o.logprobs.begin(), o.logprobs.end());
      }
    }
    EXPECT_EQ(engine.pool().n_used(), 0);
    return out;
  };
  const auto together = run(reqs);
  int n_near_ties = 0;
  for (const Request& r : reqs) {
    const auto alone = run({r}).at(r.id);
    const auto& tog = together.at(r.id);
    ASSERT_EQ(alone.size(), tog.size());
    for (size_t t = 0; t < alone.size(); ++t) {
      if (alone[t].token == tog[t].token) continue;
      ASSERT_GE(alone[t].top.size(), 2u);
      const float gap = alone[t].top[0].logprob - alone[t].top[1].logprob;
      EXPECT_LT(gap, 1e-3) << r.id << " differs at token " << t << " without a near-tie";
      ++n_near_ties;
      break;  // after a flip the continuations legitimately differ
    }
  }
  std::printf("[ policy '%s' ] %d of %zu sequences flipped at a near-tie\n", GetParam().c_str(),
              n_near_ties, reqs.size());
}

INSTANTIATE_TEST_SUITE_P(Policy, DefaultModelBatch,
                         ::testing::Values("", "sink=4,lag=16,keep=4"),
                         [](const auto& info) { return info.param.empty() ? "off" : "on"; });

TEST(Engine, CancelFreesBlocksAndReportsAbort) {
  const model::Model& m = tiny_model();
  backend::CpuBackendOptions opt;
  opt.block_size = 4;
  opt.kv_cache_bytes = 8 << 20;
  auto be = testing_util::make_test_backend(m, opt);
  ASSERT_TRUE(be.ok());
  Engine engine(**be, *m.tokenizer, {});
  auto reqs = make_requests(3, "", m.config.vocab_size);
  for (auto& r : reqs) r.stop.max_tokens = 500;
  for (const auto& r : reqs) ASSERT_TRUE(engine.add_request(r).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(engine.step().ok());
  EXPECT_GT(engine.pool().n_used(), 0);
  engine.abort_request("r1");
  auto outs = engine.step();
  ASSERT_TRUE(outs.ok());
  bool saw_abort = false;
  for (const auto& o : *outs) saw_abort |= o.id == "r1" && o.finish == FinishReason::Abort;
  EXPECT_TRUE(saw_abort);
  engine.abort_request("r0");
  engine.abort_request("r2");
  ASSERT_TRUE(engine.step().ok());
  EXPECT_FALSE(engine.has_work());
  EXPECT_EQ(engine.pool().n_used(), 0);
}

TEST(Engine, RejectsBadRequests) {
  const model::Model& m = tiny_model();
  backend::CpuBackendOptions opt;
  opt.block_size = 4;
  opt.kv_cache_bytes = 64 * 4 * 512;  // 64 blocks
  auto be = testing_util::make_test_backend(m, opt);
  ASSERT_TRUE(be.ok());
  Engine engine(**be, *m.tokenizer, {});
  Request r;
  r.id = "x";
  EXPECT_FALSE(engine.add_request(r).ok());  // empty prompt
  r.prompt = {1, 2, 100000};
  EXPECT_FALSE(engine.add_request(r).ok());  // token outside the vocabulary
  r.prompt = {1, 2, 3};
  r.stop.max_tokens = 4000;
  EXPECT_NE(std::string(engine.add_request(r).message()).find("context"), std::string::npos);
  r.stop.max_tokens = 1000;  // fits the context, not the 64-block cache
  EXPECT_NE(std::string(engine.add_request(r).message()).find("KV blocks"), std::string::npos);
  r.stop.max_tokens = 10;
  EXPECT_TRUE(engine.add_request(r).ok());
  EXPECT_EQ(engine.add_request(r).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace lagserve::runtime
