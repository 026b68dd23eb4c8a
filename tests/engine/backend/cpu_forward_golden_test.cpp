// The CPU forward pass against reference logits from Hugging Face
// transformers (tests/golden/make_logits_golden.py): every position's logits
// within 1e-3 relative error, the same argmax, and the same 32-token greedy
// continuation; for the default GGUF model and tiny Llama/Qwen2 models in
// safetensors and GGUF form. Prefill runs whole and in odd-sized chunks.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/sequence_kv.h"
#include "engine/model/model.h"
#include "engine/runtime/engine.h"

namespace lagserve {
namespace {

namespace fs = std::filesystem;
const fs::path kGolden = fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden";

struct Golden {
  std::vector<int32_t> ids, greedy, argmax, subset_ids, full_positions;
  std::vector<std::vector<int32_t>> topk_ids;
  std::vector<float> top2_gap;
  int vocab = 0;
  std::vector<float> subset, topk, full;  // see the json's "layout"
};

Golden load_golden(const std::string& name) {
  Golden g;
  std::ifstream jf(kGolden / "logits" / (name + ".json"));
  nlohmann::json j = nlohmann::json::parse(jf);
  g.ids = j["ids"].get<std::vector<int32_t>>();
  g.greedy = j["greedy"].get<std::vector<int32_t>>();
  g.argmax = j["argmax"].get<std::vector<int32_t>>();
  g.subset_ids = j["subset_ids"].get<std::vector<int32_t>>();
  g.full_positions = j["full_positions"].get<std::vector<int32_t>>();
  g.topk_ids = j["topk_ids"].get<std::vector<std::vector<int32_t>>>();
  g.top2_gap = j["top2_gap"].get<std::vector<float>>();
  g.vocab = j["vocab"].get<int>();
  const size_t T = g.ids.size(), k = g.topk_ids.at(0).size();
  std::ifstream bf(kGolden / "logits" / (name + ".bin"), std::ios::binary);
  auto read = [&](std::vector<float>& v, size_t n) {
    v.resize(n);
    bf.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(float)));
  };
  read(g.subset, T * g.subset_ids.size());
  read(g.topk, T * k);
  read(g.full, g.full_positions.size() * static_cast<size_t>(g.vocab));
  EXPECT_TRUE(bf.good()) << name << ".bin is shorter than its json says";
  return g;
}

// Models are loaded once per path for the whole test program.
const model::Model* get_model(const std::string& path) {
  static std::map<std::string, std::unique_ptr<model::Model>> cache;
  auto it = cache.find(path);
  if (it != cache.end()) return it->second.get();
  auto m = model::load_model(path);
  if (!m.ok()) return nullptr;
  return (cache[path] = std::move(*m)).get();
}

// Logits of every position, the prompt fed in chunks of `chunk` tokens.
std::vector<std::vector<float>> all_logits(const model::Model& m, const std::vector<int32_t>& ids,
                                           int chunk) {
  backend::CpuBackendOptions opt;
  opt.kv_cache_bytes = 256 << 20;
  opt.poison_kv = true;
  auto be = backend::make_cpu_backend(m, opt);
  EXPECT_TRUE(be.ok()) << be.status();
  kv::BlockPool pool((*be)->n_blocks());
  kv::SequenceKv seq((*be)->block_size());
  std::vector<std::vector<float>> rows;
  for (size_t b = 0; b < ids.size(); b += chunk) {
    const size_t n = std::min<size_t>(chunk, ids.size() - b);
    if (!seq.reserve(pool, static_cast<int32_t>(n)).ok()) {
      ADD_FAILURE() << "KV cache too small for " << ids.size() << " tokens";
      break;
    }
    backend::StepBatch batch;
    batch.seqs.push_back(backend::SequenceStep::uncompressed(
        std::span(ids).subspan(b, n), seq.logical_len(), seq.cache_len(), seq.block_table(), true));
    auto out = (*be)->step(batch);
    EXPECT_TRUE(out.ok()) << out.status();
    seq.advance(static_cast<int32_t>(n));
    for (size_t i = 0; i < n; ++i) {
      auto r = out->row(static_cast<int32_t>(i));
      rows.emplace_back(r.begin(), r.end());
    }
  }
  seq.release(pool);
  EXPECT_EQ(pool.n_used(), 0);
  return rows;
}

double rel_err(const std::vector<float>& got, const float* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct Case {
  std::string golden;
  std::string model;  // path relative to tests/golden, or "default"
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.golden << " on " << c.model; }

class CpuForwardGolden : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    const Case& c = GetParam();
    std::string path = c.model == "default" ? "default" : (kGolden / c.model).string();
    if (c.model == "default" && !model::resolve_model_path("default").ok()) {
      GTEST_SKIP() << "default model not fetched (scripts/fetch_model.py)";
    }
    model_ = get_model(path);
    ASSERT_NE(model_, nullptr) << model::load_model(path).status();
    golden_ = load_golden(c.golden);
    ASSERT_EQ(golden_.vocab, model_->config.vocab_size);
  }
  const model::Model* model_ = nullptr;
  Golden golden_;
};

TEST_P(CpuForwardGolden, LogitsMatchAtEveryPosition) {
  const Golden& g = golden_;
  const size_t T = g.ids.size(), S = g.subset_ids.size(), K = g.topk_ids[0].size();
  // Whole, and in odd-sized chunks that straddle KV blocks (7 tokens, or 129
  // for long prompts, where 7-token steps would only cost time).
  for (int chunk : {static_cast<int>(T), T > 200 ? 129 : 7}) {
    SCOPED_TRACE("prefill chunk " + std::to_string(chunk));
    const auto rows = all_logits(*model_, g.ids, chunk);
    ASSERT_EQ(rows.size(), T);
    double worst = 0;
    for (size_t t = 0; t < T; ++t) {
      std::vector<float> got(S + K);
      for (size_t i = 0; i < S; ++i) got[i] = rows[t][g.subset_ids[i]];
      for (size_t i = 0; i < K; ++i) got[S + i] = rows[t][g.topk_ids[t][i]];
      std::vector<float> want(g.subset.begin() + t * S, g.subset.begin() + (t + 1) * S);
      want.insert(want.end(), g.topk.begin() + t * K, g.topk.begin() + (t + 1) * K);
      const double e = rel_err(got, want.data(), want.size());
      worst = std::max(worst, e);
      EXPECT_LT(e, 1e-3) << "position " << t;
      const int32_t am = static_cast<int32_t>(
          std::max_element(rows[t].begin(), rows[t].end()) - rows[t].begin());
      EXPECT_EQ(am, g.argmax[t]) << "position " << t << ", reference top-2 gap " << g.top2_gap[t];
    }
    for (size_t i = 0; i < g.full_positions.size(); ++i) {
      const auto& row = rows[g.full_positions[i]];
      EXPECT_LT(rel_err(row, g.full.data() + i * g.vocab, g.vocab), 1e-3)
          << "full row at position " << g.full_positions[i];
    }
    std::printf("[ %s ] chunk %d: worst relative error %.3g over %zu positions\n",
                GetParam().golden.c_str(), chunk, worst, T);
  }
}

TEST_P(CpuForwardGolden, GreedyContinuationMatches) {
  backend::CpuBackendOptions opt;
  opt.kv_cache_bytes = 256 << 20;
  auto be = backend::make_cpu_backend(*model_, opt);
  ASSERT_TRUE(be.ok()) << be.status();
  runtime::EngineConfig cfg;
  cfg.max_batched_tokens = 64;  // the prompt runs in chunks of 64
  runtime::Engine engine(**be, *model_->tokenizer, cfg);
  runtime::Request req;
  req.id = "golden";
  req.prompt = golden_.ids;
  req.sampling.temperature = 0;
  req.stop.max_tokens = static_cast<int32_t>(golden_.greedy.size());
  req.stop.ignore_eos = true;
  ASSERT_TRUE(engine.add_request(req).ok());
  std::vector<int32_t> tokens;
  while (engine.has_work()) {
    auto outs = engine.step();
    ASSERT_TRUE(outs.ok()) << outs.status();
    for (const auto& o : *outs) tokens.insert(tokens.end(), o.tokens.begin(), o.tokens.end());
  }
  EXPECT_EQ(tokens, golden_.greedy);
  EXPECT_EQ(engine.pool().n_used(), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Models, CpuForwardGolden,
    ::testing::Values(Case{"tiny_llama", "models/tiny-llama"},
                      Case{"tiny_qwen2", "models/tiny-qwen2"},
                      Case{"tiny_llama_gguf", "models/tiny-llama.gguf"},
                      Case{"smollm2_hello", "default"}, Case{"smollm2_chat", "default"},
                      Case{"smollm2_code", "default"}, Case{"smollm2_unicode", "default"},
                      Case{"smollm2_long", "default"}),
    [](const auto& info) { return info.param.golden; });

}  // namespace
}  // namespace lagserve
