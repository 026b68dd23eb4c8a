// AsyncEngine: requests submitted from several threads at once stream the
// same greedy tokens as the synchronous engine; a cancelled request ends with
// Abort and its blocks come back; bad requests are refused at submit; a group
// shares one stream; cancel_all aborts everything; the KV statistics follow
// the retained-length formula.
#include "engine/runtime/async_engine.h"

#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "tests/common/test_backend.h"

namespace lagserve::runtime {
namespace {

namespace fs = std::filesystem;

struct Fixture {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<backend::Backend> backend;
};

Fixture make_fixture() {
  Fixture f;
  auto m = model::load_model(
      (fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models/tiny-llama").string());
  EXPECT_TRUE(m.ok()) << m.status();
  f.model = std::move(*m);
  backend::CpuBackendOptions opt;
  opt.block_size = 4;
  opt.kv_cache_bytes = 8 << 20;
  f.backend = std::move(*testing_util::make_test_backend(*f.model, opt));
  return f;
}

Request make_request(int i) {
  std::mt19937 rng(i);
  Request r;
  r.id = "q" + std::to_string(i);
  for (int t = 0; t < 10 + i * 3; ++t) r.prompt.push_back(3 + static_cast<int32_t>(rng() % 290));
  r.sampling.temperature = 0;
  r.stop.max_tokens = 12 + i;
  r.stop.ignore_eos = true;
  r.lagkv = *kv::LagPolicy::parse("sink=2,lag=4,keep=1");
  return r;
}

TEST(AsyncEngine, ConcurrentSubmitsMatchSynchronousRun) {
  constexpr int kRequests = 8;
  // Reference: the synchronous engine, all requests together.
  std::map<std::string, std::vector<int32_t>> want;
  {
    Fixture f = make_fixture();
    Engine engine(*f.backend, *f.model->tokenizer, {});
    for (int i = 0; i < kRequests; ++i) ASSERT_TRUE(engine.add_request(make_request(i)).ok());
    while (engine.has_work()) {
      auto outs = engine.step();
      ASSERT_TRUE(outs.ok());
      for (const auto& o : *outs) want[o.id].insert(want[o.id].end(), o.tokens.begin(), o.tokens.end());
    }
  }
  Fixture f = make_fixture();
  AsyncEngine async(std::make_unique<Engine>(*f.backend, *f.model->tokenizer, EngineConfig{}));
  std::vector<std::vector<int32_t>> got(kRequests);
  std::vector<FinishReason> finish(kRequests, FinishReason::None);
  std::vector<std::thread> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] {
      auto stream = async.submit(make_request(i));
      ASSERT_TRUE(stream.ok()) << stream.status();
      while (auto out = (*stream)->next()) {
        got[i].insert(got[i].end(), out->tokens.begin(), out->tokens.end());
        finish[i] = out->finish;
      }
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(got[i], want.at("q" + std::to_string(i))) << i;
    EXPECT_EQ(finish[i], FinishReason::Length) << i;
  }
  EXPECT_EQ(async.stats().blocks_used, 0);
}

TEST(AsyncEngine, CancelEndsWithAbortAndFreesBlocks) {
  Fixture f = make_fixture();
  AsyncEngine async(std::make_unique<Engine>(*f.backend, *f.model->tokenizer, EngineConfig{}));
  Request r = make_request(1);
  r.stop.max_tokens = 1000;
  auto stream = async.submit(r);
  ASSERT_TRUE(stream.ok());
  auto first = (*stream)->next();  // it is running
  ASSERT_TRUE(first.has_value());
  (*stream)->cancel();
  FinishReason last = FinishReason::None;
  int n = 0;
  while (auto out = (*stream)->next()) {
    last = out->finish;
    n += static_cast<int>(out->tokens.size());
  }
  EXPECT_EQ(last, FinishReason::Abort);
  EXPECT_LT(n, 999);
  // The engine thread publishes stats after the step that aborted.
  for (int i = 0; i < 100 && async.stats().blocks_used != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(async.stats().blocks_used, 0);
}

TEST(AsyncEngine, BadRequestsAreRefusedAtSubmit) {
  Fixture f = make_fixture();
  AsyncEngine async(std::make_unique<Engine>(*f.backend, *f.model->tokenizer, EngineConfig{}));
  Request r = make_request(0);
  r.prompt.clear();
  EXPECT_FALSE(async.submit(r).ok());
  r = make_request(0);
  r.sampling.top_p = 0;  // out of range
  EXPECT_FALSE(async.submit(r).ok());
  // ... and a good one still runs.
  auto ok = async.submit(make_request(2));
  ASSERT_TRUE(ok.ok());
  int n = 0;
  while (auto out = (*ok)->next()) n += static_cast<int>(out->tokens.size());
  EXPECT_EQ(n, 14);
}

TEST(AsyncEngine, GroupSharesOneStreamAndIsAllOrNothing) {
  Fixture f = make_fixture();
  AsyncEngine async(std::make_unique<Engine>(*f.backend, *f.model->tokenizer, EngineConfig{}));
  std::vector<Request> group = {make_request(0), make_request(1), make_request(2)};
  auto stream = async.submit_group(group);
  ASSERT_TRUE(stream.ok()) << stream.status();
  std::map<std::string, int> tokens, finishes;
  RequestOutput out;
  for (RequestStream::Poll p;
       (p = (*stream)->next_for(std::chrono::milliseconds(20), &out)) !=
       RequestStream::Poll::Done;) {
    if (p == RequestStream::Poll::Timeout) continue;
    tokens[out.id] += static_cast<int>(out.tokens.size());
    if (out.finished()) ++finishes[out.id];
  }
  for (int i = 0; i < 3; ++i) {
    const std::string id = "q" + std::to_string(i);
    EXPECT_EQ(tokens[id], 12 + i) << id;
    EXPECT_EQ(finishes[id], 1) << id;
  }
  // One bad member refuses the whole group; a duplicate id too.
  std::vector<Request> bad = {make_request(3), make_request(4)};
  bad[1].sampling.top_p = 0;
  EXPECT_FALSE(async.submit_group(bad).ok());
  std::vector<Request> twice = {make_request(5), make_request(5)};
  EXPECT_EQ(async.submit_group(twice).status().code(), absl::StatusCode::kAlreadyExists);
  // Nothing of the refused groups runs: a new request with their ids is accepted.
  EXPECT_TRUE(async.submit(make_request(3)).ok());
}

TEST(AsyncEngine, CancelAllAbortsEveryRequest) {
  Fixture f = make_fixture();
  AsyncEngine async(std::make_unique<Engine>(*f.backend, *f.model->tokenizer, EngineConfig{}));
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 4; ++i) {
    Request r = make_request(i);
    r.stop.max_tokens = 1000;
    auto s = async.submit(r);
    ASSERT_TRUE(s.ok());
    streams.push_back(*s);
  }
  ASSERT_TRUE(streams[0]->next().has_value());  // running
  async.cancel_all();
  for (auto& s : streams) {
    FinishReason last = FinishReason::None;
    while (auto out = s->next()) last = out->finish;
    EXPECT_EQ(last, FinishReason::Abort);
  }
}

TEST(Engine, KvStatisticsFollowTheRetainedLength) {
  Fixture f = make_fixture();
  Engine engine(*f.backend, *f.model->tokenizer, EngineConfig{});
  Request r = make_request(0);  // policy sink=2, lag=4, keep=1
  r.prompt.resize(30);
  r.stop.max_tokens = 5;
  const kv::LagPolicy policy = *r.lagkv;
  ASSERT_TRUE(engine.add_request(r).ok());
  double queue_seconds = -1;
  int32_t n_output = 0;
  while (engine.has_work()) {
    auto outs = engine.step();
    ASSERT_TRUE(outs.ok());
    for (const RequestOutput& o : *outs) {
      queue_seconds = o.queue_seconds;
      n_output = o.n_output;
    }
    const EngineStats s = engine.stats();
    if (!engine.has_work()) break;
    // Tokens computed so far: the prompt, then one more per output but the last.
    const int32_t n = s.kv_tokens_logical;
    EXPECT_EQ(s.kv_tokens_retained, policy.retained_len(n)) << n;
    EXPECT_EQ(s.kv_tokens_evicted, n - policy.retained_len(n)) << n;
  }
  EXPECT_EQ(n_output, 5);
  EXPECT_GE(queue_seconds, 0.0);
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.kv_tokens_logical, 0);  // nothing holds a cache any more
  EXPECT_EQ(s.kv_tokens_evicted, 34 - policy.retained_len(34));  // 30 + 5 - 1 computed
}

}  // namespace
}  // namespace lagserve::runtime
