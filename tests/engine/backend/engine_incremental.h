// The engine's compressed incremental run, shared by the conformance tests
// (tests/engine/backend/lag_conformance_test.cpp against a masked dense
// forward, tests/trainer/lrsa_conformance_test.cpp against the trainer): the
// CPU backend fed `chunk` tokens per step through a SequenceCache, all logits
// and every compaction's kept positions recorded.
#pragma once

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <span>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/lag_policy.h"
#include "engine/kv/sequence_cache.h"
#include "engine/model/model.h"

namespace lagserve::testing_util {

using Selections = std::map<std::tuple<int, int, int>, std::vector<int32_t>>;  // (layer, head, p)

struct ForwardRun {
  std::vector<std::vector<float>> logits;  // [T][vocab]
  Selections kept;                         // absolute positions kept per partition
};

// `be` fed `chunk` tokens per step through a SequenceCache, then the last
// `decode_tail` tokens one per step (decode).
inline ForwardRun engine_forward(backend::Backend& be, const std::vector<int32_t>& ids,
                                 const kv::LagPolicy& P, int chunk, int decode_tail = 0) {
  const int32_t n_layers = be.config().n_layers;
  kv::BlockPool pool(be.n_blocks());
  kv::SequenceCache cache(P, n_layers, be.block_size());
  ForwardRun run;
  const size_t prefill_end = ids.size() - std::min<size_t>(decode_tail, ids.size());
  for (size_t b = 0; b < ids.size();) {
    const size_t limit = b < prefill_end ? prefill_end - b : 1;
    const int n = static_cast<int>(std::min<size_t>(std::min<size_t>(chunk, limit), ids.size() - b));
    EXPECT_TRUE(cache.reserve(pool, n).ok());
    backend::StepBatch batch;
    batch.seqs.push_back(backend::SequenceStep::from_cache(cache, std::span(ids).subspan(b, n),
                                                           /*all_logits=*/true,
                                                           /*trace_evictions=*/true));
    auto out = be.step(batch);
    EXPECT_TRUE(out.ok()) << out.status();
    for (int i = 0; i < n; ++i) {
      auto r = out->row(i);
      run.logits.emplace_back(r.begin(), r.end());
    }
    for (const auto& e : out->evictions) run.kept[{e.layer, e.kv_head, e.partition}] = e.kept_positions;
    cache.advance(pool, n);
    b += n;
    if (cache.has_compressed()) {
      EXPECT_EQ(cache.compressed().cache_len(), P.retained_len(cache.logical_len()));
    }
  }
  cache.release(pool);
  EXPECT_EQ(pool.n_used(), 0);
  return run;
}

// The same on a CPU backend (all cores) with a poisoned cache large enough for
// `ids`; bf16_rounding: rounding where the CUDA backend keeps bf16; follow:
// another run's selections, kept instead of the backend's own, which `kept`
// still records (CpuBackendOptions).
inline ForwardRun engine_forward(const model::Model& m, const std::vector<int32_t>& ids,
                                 const kv::LagPolicy& P, int chunk, int block_size,
                                 int decode_tail = 0, bool bf16_rounding = false,
                                 const Selections* follow = nullptr) {
  backend::CpuBackendOptions opt;
  opt.bf16_rounding = bf16_rounding;
  if (follow != nullptr) {
    opt.follow_selections = [follow](int32_t layer, int32_t head, int32_t p) -> const std::vector<int32_t>* {
      auto it = follow->find({layer, head, p});
      EXPECT_NE(it, follow->end()) << "no selection to follow for layer " << layer << " head " << head
                                   << " partition " << p;
      return it == follow->end() ? nullptr : &it->second;
    };
  }
  opt.n_threads = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  opt.block_size = block_size;
  // Twice the tokens: a policy with skip_layers holds a full and a compressed group.
  opt.kv_cache_bytes = std::max<int64_t>(
      64 << 20, 2 * backend::kv_bytes_per_token(m.config) * (static_cast<int64_t>(ids.size()) + 4 * block_size));
  opt.poison_kv = true;
  auto be = backend::make_cpu_backend(m, opt);
  EXPECT_TRUE(be.ok()) << be.status();
  return engine_forward(**be, ids, P, chunk, decode_tail);
}

// The path of a conformance model: tests/golden/models/NAME, or the cached
// default model for "default" (empty when it is not there: the test skips).
inline std::string conformance_model_path(const std::string& name) {
  if (name != "default") return std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/" + name;
  auto path = model::resolve_model_path("default");
  return path.ok() ? "default" : "";
}

// `length` token ids drawn from [3, vocab), seeded by the length.
inline std::vector<int32_t> conformance_ids(int length, int32_t vocab) {
  std::mt19937 rng(length);
  std::vector<int32_t> ids(length);
  for (int32_t& t : ids) t = 3 + static_cast<int32_t>(rng() % (vocab - 3));
  return ids;
}

// The first n tokens of English prose and markdown: the repository's docs
// (2,000 and more).
inline std::vector<int32_t> docs_text_ids(const model::Model& m, size_t n) {
  std::string text;
  for (const char* f : {"/README.md", "/docs/trainer.md", "/docs/benchmarks.md", "/../shared/DESIGN.md"}) {
    std::ifstream in(std::string(LAGSERVE_SOURCE_DIR) + f);
    std::stringstream ss;
    ss << in.rdbuf();
    text += ss.str();
  }
  std::vector<int32_t> ids = m.tokenizer->encode(text, false);
  EXPECT_GE(ids.size(), n);
  ids.resize(std::min(ids.size(), n));
  return ids;
}

// Greedy decoding sampled on the device (Backend::samples_on_device): `n_seqs`
// random prompts of different lengths prefilled in one step, then `steps`
// steps of one token each; every sampled token must be its row's argmax.
// Returns the tokens checked.
inline int expect_greedy_takes_argmax(backend::Backend& be, int n_seqs, int steps) {
  kv::BlockPool pool(be.n_blocks());
  backend::DeviceSampling greedy;
  greedy.temperature = 0.f;
  std::vector<kv::SequenceCache> caches;
  std::vector<std::vector<int32_t>> ids;
  for (int k = 0; k < n_seqs; ++k) {
    caches.emplace_back(kv::LagPolicy{}, be.config().n_layers, be.block_size());
    ids.push_back(conformance_ids(9 + 5 * k, be.config().vocab_size));
  }
  int checked = 0;
  for (int step = 0; step < steps; ++step) {
    backend::StepBatch b;
    for (int k = 0; k < n_seqs; ++k) {
      const auto toks = step == 0 ? std::span<const int32_t>(ids[k]) : std::span<const int32_t>(ids[k]).last(1);
      EXPECT_TRUE(caches[k].reserve(pool, static_cast<int32_t>(toks.size())).ok());
      b.seqs.push_back(backend::SequenceStep::from_cache(caches[k], toks));
      b.seqs.back().sampling = &greedy;
    }
    auto out = be.step(b);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok() || static_cast<int>(out->tokens.size()) != n_seqs) break;
    for (int k = 0; k < n_seqs; ++k) {
      caches[k].advance(pool, static_cast<int32_t>(b.seqs[k].tokens.size()));
      const auto row = out->last_row(k);
      EXPECT_EQ(out->tokens[k], std::max_element(row.begin(), row.end()) - row.begin());
      ++checked;
      ids[k].push_back(out->tokens[k]);
    }
  }
  for (auto& c : caches) c.release(pool);
  return checked;
}

// ||a - b|| / ||b||
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * static_cast<double>(a[i] - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace lagserve::testing_util
