// One step over several sequences at once (a prefill chunk, a continued
// prefill and a decode token side by side) gives each sequence the logits
// transformers gives it alone. All sequences are prefixes of one golden
// sequence, so the golden logits at their positions are the reference.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/sequence_kv.h"
#include "engine/model/model.h"

namespace lagserve {
namespace {

namespace fs = std::filesystem;
const fs::path kGolden = fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden";

TEST(CpuBackendBatch, MixedStepMatchesGoldenPerSequence) {
  auto model = model::load_model((kGolden / "models/tiny-qwen2").string());
  ASSERT_TRUE(model.ok()) << model.status();
  std::ifstream jf(kGolden / "logits/tiny_qwen2.json");
  const auto j = nlohmann::json::parse(jf);
  const auto ids = j["ids"].get<std::vector<int32_t>>();
  const int vocab = j["vocab"].get<int>();
  std::vector<float> subset(ids.size() * vocab);  // subset is the whole vocabulary here
  ASSERT_EQ(j["subset_ids"].size(), static_cast<size_t>(vocab));
  std::ifstream bf(kGolden / "logits/tiny_qwen2.bin", std::ios::binary);
  bf.read(reinterpret_cast<char*>(subset.data()), subset.size() * sizeof(float));
  ASSERT_TRUE(bf.good());

  backend::CpuBackendOptions opt;
  opt.block_size = 4;
  opt.kv_cache_bytes = 8 << 20;
  opt.poison_kv = true;
  auto be = backend::make_cpu_backend(**model, opt);
  ASSERT_TRUE(be.ok());
  kv::BlockPool pool((*be)->n_blocks());
  kv::SequenceKv a(4), b(4), c(4);
  auto step = [&](std::vector<std::pair<kv::SequenceKv*, std::pair<int, int>>> work) {
    backend::StepBatch batch;
    for (auto& [seq, range] : work) {
      ASSERT_TRUE(seq->reserve(pool, range.second - range.first).ok());
      batch.seqs.push_back(backend::SequenceStep::uncompressed(
          std::span(ids).subspan(range.first, range.second - range.first), seq->logical_len(),
          seq->cache_len(), seq->block_table(), true));
    }
    auto out = (*be)->step(batch);
    ASSERT_TRUE(out.ok()) << out.status();
    for (size_t s = 0; s < work.size(); ++s) {
      auto [seq, range] = work[s];
      seq->advance(range.second - range.first);
      ASSERT_EQ(out->row_begin[s + 1] - out->row_begin[s], range.second - range.first);
      for (int p = range.first; p < range.second; ++p) {
        auto row = out->row(out->row_begin[s] + p - range.first);
        for (int v = 0; v < vocab; ++v) {
          ASSERT_NEAR(row[v], subset[p * vocab + v], 1e-3 * (1 + std::fabs(subset[p * vocab + v])))
              << "sequence " << s << " position " << p << " token " << v;
        }
      }
    }
  };
  // Step 1: b and c prefill alone.
  step({{&b, {0, 50}}, {&c, {0, 80}}});
  // Step 2: a prefills 40, b continues with 10 more, c decodes one token.
  step({{&a, {0, 40}}, {&b, {50, 60}}, {&c, {80, 81}}});
  // Step 3: three decode tokens at different lengths.
  step({{&a, {40, 41}}, {&b, {60, 61}}, {&c, {81, 82}}});
  for (kv::SequenceKv* s : {&a, &b, &c}) s->release(pool);
  EXPECT_EQ(pool.n_used(), 0);
}

}  // namespace
}  // namespace lagserve
