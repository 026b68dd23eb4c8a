// The CUDA backend against the CPU backend on the same weights: the default
// model teacher-forced over 2,000 positions of real text (prefill chunks,
// then decode steps), with the KV policy off and on; top-1 agreement and the
// positions kept by compaction, against the CPU rounding as the GPU does and
// against plain fp32 (issue 6). Also a mixed batch in one step, sampling on
// the device against the host sampler, and bad input.
#include "engine/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <set>
#include <tuple>

#include <gtest/gtest.h>

#include "engine/runtime/sampler.h"
#include "tests/engine/backend/agreement.h"
#include "tests/engine/backend/engine_incremental.h"
#include "tests/engine/cuda/require_gpu.h"

namespace lagserve {
namespace {

using testing_util::agreement;
using testing_util::Agreement;
using testing_util::argmax;
using testing_util::engine_forward;
using testing_util::ForwardRun;

std::unique_ptr<backend::Backend> cuda_backend(const model::Model& m, int64_t cache_mb = 512) {
  backend::CudaBackendOptions opt;
  opt.kv_cache_bytes = cache_mb << 20;
  opt.poison_kv = true;
  auto be = backend::make_cuda_backend(m, opt);
  EXPECT_TRUE(be.ok()) << be.status();
  return be.ok() ? std::move(*be) : nullptr;
}

// A policy, and the prompt chunk: 160 takes the prefill kernel; 4 takes
// every prompt position through the decode kernel's rows (whose Q and
// probabilities keep about 16 mantissa bits on the tensor cores, where the
// prefill kernel's are bf16), which tells whether the prefill kernel's
// arithmetic is what separates the two backends with the policy on.
class DefaultModel : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

// Against two CPU references of the same steps. The CPU backend rounding to
// bf16 where the GPU keeps bf16 (weights, GEMM inputs, the K/V cache), fed the
// GPU's tokens and, with the policy on, keeping the positions the GPU kept
// (CpuBackendOptions::follow_selections) as its own selections are recorded:
// held to issue 6's >= 99% of positions and of kept slots. And the plain
// fp32 CPU backend making its own selections: 99% top-1 with the policy off,
// 97% top-1 and kept slots with it on, since a near-tie of the LagKV top-K
// that flips leaves the two caches holding different tokens for the rest of
// the run (bf16 rounding alone on the CPU does as much:
// tests/engine/backend/cpu_bf16_rounding_test.cpp; docs/cuda.md).
TEST_P(DefaultModel, TopOneAndKeptPositionsAgreeWithCpu) {
  REQUIRE_GPU();
  const std::string path = testing_util::conformance_model_path("default");
  if (path.empty()) GTEST_SKIP() << "the default model is not cached (scripts/fetch_model.py)";
  auto m = model::load_model(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const auto& [spec, chunk] = GetParam();
  auto policy = kv::LagPolicy::parse(spec);
  ASSERT_TRUE(policy.ok()) << policy.status();
  const std::vector<int32_t> ids = testing_util::docs_text_ids(**m, 2000);
  ASSERT_EQ(ids.size(), 2000u);
  // 1,700 positions in prompt chunks, the last 300 one token a step.
  auto gpu_be = cuda_backend(**m);
  ASSERT_NE(gpu_be, nullptr);
  const ForwardRun gpu = engine_forward(*gpu_be, ids, *policy, chunk, 300);
  const ForwardRun cpu_bf16 =
      engine_forward(**m, ids, *policy, chunk, 16, 300, /*bf16_rounding=*/true, &gpu.kept);
  const std::string label = "policy " + spec + ", chunks of " + std::to_string(chunk);
  const Agreement a = agreement(gpu, cpu_bf16, *policy, label + " vs CPU bf16 following the GPU's selections");
  RecordProperty("top1_agreement", std::to_string(a.top1));
  EXPECT_GE(a.top1, 0.99);
  EXPECT_GE(a.slots, 0.99);
  const ForwardRun cpu = engine_forward(**m, ids, *policy, chunk, 16, 300);
  const Agreement b = agreement(gpu, cpu, *policy, label + " vs CPU fp32");
  RecordProperty("top1_agreement_fp32", std::to_string(b.top1));
  EXPECT_GE(b.top1, policy->enabled ? 0.97 : 0.99);
  EXPECT_GE(b.slots, 0.97);
}

INSTANTIATE_TEST_SUITE_P(Policies, DefaultModel,
                         ::testing::Values(std::tuple{"off", 160},
                                           std::tuple{"sink=16,lag=64,ratio=0.25", 160},
                                           std::tuple{"sink=4,lag=32,keep=4,skip_layers=0;1", 160},
                                           std::tuple{"sink=16,lag=64,ratio=0.25", 4}));

// Several sequences in one step: prefill chunks and decode tokens, with and
// without a policy, against the CPU backend fed the same steps. A sequence's
// logits are compared until its first compaction that kept other positions
// than the CPU's (bf16 against fp32 scores may flip a near-tie; the caches
// differ from then on, and in a tiny random model so do the logits); the
// kept positions themselves must agree on nearly every slot.
TEST(CudaBackend, MixedBatchMatchesCpu) {
  REQUIRE_GPU();
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  ASSERT_TRUE(m.ok()) << m.status();
  backend::CpuBackendOptions copt;
  copt.kv_cache_bytes = 64 << 20;
  auto cpu = backend::make_cpu_backend(**m, copt);
  ASSERT_TRUE(cpu.ok());
  auto gpu = cuda_backend(**m, 64);
  ASSERT_NE(gpu, nullptr);
  auto pol = kv::LagPolicy::parse("sink=4,lag=16,ratio=0.25");
  ASSERT_TRUE(pol.ok());
  const int32_t vocab = (*m)->config.vocab_size;
  kv::BlockPool pool_c((*cpu)->n_blocks()), pool_g(gpu->n_blocks());
  struct Seq {
    kv::SequenceCache c, g;
    std::vector<int32_t> ids;
    size_t done = 0;
    bool diverged = false;
  };
  std::vector<Seq> seqs;
  for (int s = 0; s < 5; ++s) {
    const kv::LagPolicy p = s % 2 == 0 ? *pol : kv::LagPolicy{};
    seqs.push_back({kv::SequenceCache(p, (*m)->config.n_layers, 16),
                    kv::SequenceCache(p, (*m)->config.n_layers, 16),
                    testing_util::conformance_ids(150 + 37 * s, vocab), 0, false});
  }
  int steps = 0, top1_diff = 0, rows = 0, compared = 0;
  int64_t slots = 0, same_slots = 0;
  double worst = 0;
  while (true) {
    backend::StepBatch bc, bg;
    std::vector<int> ns;
    for (size_t s = 0; s < seqs.size(); ++s) {
      Seq& q = seqs[s];
      if (q.done >= q.ids.size()) continue;
      // Sequences alternate between chunks and single tokens.
      const int n = static_cast<int>(std::min<size_t>((steps + s) % 3 == 0 ? 1 : 23, q.ids.size() - q.done));
      ASSERT_TRUE(q.c.reserve(pool_c, n).ok());
      ASSERT_TRUE(q.g.reserve(pool_g, n).ok());
      auto toks = std::span<const int32_t>(q.ids).subspan(q.done, n);
      bc.seqs.push_back(backend::SequenceStep::from_cache(q.c, toks, s == 1, true));
      bg.seqs.push_back(backend::SequenceStep::from_cache(q.g, toks, s == 1, true));
      ns.push_back(static_cast<int>(s));
    }
    if (ns.empty()) break;
    auto oc = (*cpu)->step(bc);
    auto og = gpu->step(bg);
    ASSERT_TRUE(oc.ok() && og.ok());
    ASSERT_EQ(oc->row_begin, og->row_begin);
    // The backends may list compactions in different orders.
    ASSERT_EQ(oc->evictions.size(), og->evictions.size());
    std::map<std::tuple<int, int, int, int>, const std::vector<int32_t>*> cpu_kept;
    for (const backend::EvictionRecord& x : oc->evictions) {
      cpu_kept[{x.seq, x.layer, x.kv_head, x.partition}] = &x.kept_positions;
    }
    for (const backend::EvictionRecord& y : og->evictions) {
      auto it = cpu_kept.find({y.seq, y.layer, y.kv_head, y.partition});
      ASSERT_NE(it, cpu_kept.end()) << "a compaction the CPU did not make";
      const std::vector<int32_t>& x = *it->second;
      ASSERT_EQ(x.size(), y.kept_positions.size());
      const std::set<int32_t> a(x.begin(), x.end());
      int same = 0;
      for (int32_t p : y.kept_positions) same += static_cast<int>(a.count(p));
      slots += static_cast<int64_t>(x.size());
      same_slots += same;
      if (same != static_cast<int>(x.size())) seqs[ns[y.seq]].diverged = true;
    }
    for (size_t k = 0; k < ns.size(); ++k) {
      for (int32_t r = oc->row_begin[k]; r < oc->row_begin[k + 1]; ++r, ++rows) {
        if (seqs[ns[k]].diverged) continue;
        const auto a = oc->row(r), b = og->row(r);
        std::vector<float> va(a.begin(), a.end()), vb(b.begin(), b.end());
        worst = std::max(worst, testing_util::rel_err(vb, va));
        top1_diff += argmax(va) != argmax(vb);
        ++compared;
      }
    }
    for (size_t i = 0; i < ns.size(); ++i) {
      Seq& q = seqs[ns[i]];
      const int n = static_cast<int>(bc.seqs[i].tokens.size());
      q.c.advance(pool_c, n);
      q.g.advance(pool_g, n);
      q.done += n;
    }
    ++steps;
  }
  for (Seq& q : seqs) {
    q.c.release(pool_c);
    q.g.release(pool_g);
  }
  std::printf("mixed batch: %d steps, %d rows, %d compared (worst relative logit error %.3g, "
              "top-1 differences %d); kept positions agree on %lld of %lld slots\n",
              steps, rows, compared, worst, top1_diff, static_cast<long long>(same_slots),
              static_cast<long long>(slots));
  // The two sequences without a policy are always compared.
  EXPECT_GE(compared, rows / 2);
  // bf16 weights, activations and cache against fp32, in a tiny random model
  // whose logits are small and close together: a few percent (seen on the
  // H200: 0.052, 7 top-1 differences in 240 rows; a wrong row is ~1).
  EXPECT_LT(worst, 0.1);
  EXPECT_LE(top1_diff, compared / 20);
  ASSERT_GT(slots, 0);
  EXPECT_GE(static_cast<double>(same_slots) / slots, 0.95);
}

// Device sampling against the host sampler (runtime::Sampler, the reference)
// on the very logits rows of the same steps: greedy rows take the argmax;
// seeded rows draw with the uniform the host sampler's own generator gives,
// through top-k, top-p, min-p, penalties, logit bias and bans.
TEST(CudaBackend, SamplesOnTheDeviceAsTheHostSamplerDoes) {
  REQUIRE_GPU();
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  ASSERT_TRUE(m.ok()) << m.status();
  auto gpu = cuda_backend(**m, 64);
  ASSERT_NE(gpu, nullptr);
  ASSERT_TRUE(gpu->samples_on_device());
  const int32_t vocab = (*m)->config.vocab_size;
  std::vector<runtime::SamplingParams> kinds(6);
  kinds[0].temperature = 0.f;
  kinds[1].temperature = 0.8f, kinds[1].top_k = 20;
  kinds[2].temperature = 1.0f, kinds[2].top_p = 0.9f;
  kinds[3].temperature = 0.7f, kinds[3].min_p = 0.05f, kinds[3].repetition_penalty = 1.3f;
  kinds[3].presence_penalty = 0.5f, kinds[3].frequency_penalty = 0.3f;
  kinds[3].logit_bias = {{5, 3.0f}, {7, -2.0f}};
  kinds[4].temperature = 1.3f, kinds[4].top_k = 50, kinds[4].top_p = 0.95f;
  kinds[5].temperature = 0.f, kinds[5].repetition_penalty = 1.5f, kinds[5].logit_bias = {{11, 1.0f}};
  kv::BlockPool pool(gpu->n_blocks());
  struct Seq {
    kv::SequenceCache cache;
    std::vector<int32_t> prompt, output;
    std::unique_ptr<runtime::Sampler> host, uniforms;  // same seed: the same draws
  };
  std::vector<Seq> seqs;
  for (size_t k = 0; k < kinds.size(); ++k) {
    seqs.push_back({kv::SequenceCache(kv::LagPolicy{}, (*m)->config.n_layers, 16),
                    testing_util::conformance_ids(16 + 3 * static_cast<int>(k), vocab), {},
                    std::make_unique<runtime::Sampler>(kinds[k], 1000 + k),
                    std::make_unique<runtime::Sampler>(kinds[k], 1000 + k)});
  }
  int draws = 0, same = 0, greedy_rows = 0;
  for (int step = 0; step < 25; ++step) {
    backend::StepBatch b;
    std::vector<backend::DeviceSampling> ds(seqs.size());
    std::vector<std::vector<int32_t>> out_ids(seqs.size()), out_counts(seqs.size()),
        bias_ids(seqs.size()), banned(seqs.size());
    std::vector<std::vector<float>> bias_values(seqs.size());
    for (size_t k = 0; k < seqs.size(); ++k) {
      Seq& q = seqs[k];
      const std::span<const int32_t> toks =
          step == 0 ? std::span<const int32_t>(q.prompt) : std::span<const int32_t>(q.output).last(1);
      ASSERT_TRUE(q.cache.reserve(pool, static_cast<int32_t>(toks.size())).ok());
      b.seqs.push_back(backend::SequenceStep::from_cache(q.cache, toks));
      const runtime::SamplingParams& p = kinds[k];
      backend::DeviceSampling& d = ds[k];
      d.temperature = p.temperature, d.top_k = p.top_k, d.top_p = p.top_p, d.min_p = p.min_p;
      d.repetition_penalty = p.repetition_penalty, d.presence_penalty = p.presence_penalty;
      d.frequency_penalty = p.frequency_penalty;
      d.u = static_cast<float>(q.uniforms->next_uniform());
      d.prompt_tokens = q.prompt;
      std::map<int32_t, int32_t> counts;
      for (int32_t t : q.output) ++counts[t];
      for (const auto& [id, n] : counts) out_ids[k].push_back(id), out_counts[k].push_back(n);
      d.output_ids = out_ids[k], d.output_counts = out_counts[k];
      for (const auto& [id, v] : p.logit_bias) bias_ids[k].push_back(id), bias_values[k].push_back(v);
      d.bias_ids = bias_ids[k], d.bias_values = bias_values[k];
      if (k % 2 == 1 && !q.output.empty()) banned[k] = {q.output.back()};  // no immediate repeat
      d.banned = banned[k];
      b.seqs.back().sampling = &d;  // need_logits stays true: the host samples the same rows
    }
    auto out = gpu->step(b);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->tokens.size(), seqs.size());
    for (size_t k = 0; k < seqs.size(); ++k) {
      Seq& q = seqs[k];
      q.cache.advance(pool, static_cast<int32_t>(b.seqs[k].tokens.size()));
      const int32_t got = out->tokens[k];
      ASSERT_GE(got, 0);
      ASSERT_LT(got, vocab);
      const runtime::SampleResult want = q.host->sample(out->last_row(static_cast<int32_t>(k)), q.prompt, q.output, banned[k]);
      ++draws;
      same += got == want.token;
      if (kinds[k].temperature == 0.f && kinds[k].logit_bias.empty()) {
        const auto row = out->last_row(static_cast<int32_t>(k));
        EXPECT_EQ(got, std::max_element(row.begin(), row.end()) - row.begin());
        ++greedy_rows;
      }
      q.output.push_back(got);  // the device's token goes on, so both see the same history
    }
  }
  for (Seq& q : seqs) q.cache.release(pool);
  std::printf("device sampling: %d of %d draws equal the host sampler's (%d greedy rows)\n", same,
              draws, greedy_rows);
  // The two sum the probability masses differently (2^-40 fixed point against
  // double): a draw may differ only when the uniform falls within rounding of
  // a boundary, which should essentially never happen.
  EXPECT_GE(same, draws - 1);
}

// A batch whose rows are all plain greedy takes the wide argmax path: each
// token is the first argmax of its row of the same step.
TEST(CudaBackend, GreedyBatchTakesTheArgmax) {
  REQUIRE_GPU();
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  ASSERT_TRUE(m.ok()) << m.status();
  auto gpu = cuda_backend(**m, 64);
  ASSERT_NE(gpu, nullptr);
  EXPECT_EQ(testing_util::expect_greedy_takes_argmax(*gpu, 5, 12), 60);
}

// CudaBackendOptions::step_times (bench_cuda_decode's host times): every
// successful step counted once, each part of it timed, their sum within the
// steps' wall time; a rejected step adds nothing.
TEST(CudaBackend, StepTimesCountEachStepOnce) {
  REQUIRE_GPU();
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  ASSERT_TRUE(m.ok()) << m.status();
  backend::CudaStepTimes times;
  backend::CudaBackendOptions opt;
  opt.kv_cache_bytes = 64 << 20;
  opt.step_times = &times;
  auto gpu = backend::make_cuda_backend(**m, opt);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(testing_util::expect_greedy_takes_argmax(**gpu, 3, 7), 21);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(times.steps, 7);
  for (double part : {times.plan_s, times.launch_s, times.wait_s, times.after_s}) EXPECT_GT(part, 0);
  EXPECT_LE(times.plan_s + times.launch_s + times.wait_s + times.after_s, wall);
  kv::BlockPool pool((*gpu)->n_blocks());
  kv::SequenceCache c(kv::LagPolicy{}, (*m)->config.n_layers, 16);
  ASSERT_TRUE(c.reserve(pool, 1).ok());
  const std::vector<int32_t> bad = {(*m)->config.vocab_size};
  backend::StepBatch b;
  b.seqs.push_back(backend::SequenceStep::from_cache(c, bad));
  EXPECT_FALSE((*gpu)->step(b).ok());
  EXPECT_EQ(times.steps, 7);
  c.release(pool);
}

TEST(CudaBackend, RejectsTokensOutsideTheVocabulary) {
  REQUIRE_GPU();
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-llama");
  ASSERT_TRUE(m.ok());
  auto gpu = cuda_backend(**m, 16);
  ASSERT_NE(gpu, nullptr);
  kv::BlockPool pool(gpu->n_blocks());
  kv::SequenceCache c(kv::LagPolicy{}, (*m)->config.n_layers, 16);
  ASSERT_TRUE(c.reserve(pool, 2).ok());
  const std::vector<int32_t> bad = {1, (*m)->config.vocab_size};
  backend::StepBatch b;
  b.seqs.push_back(backend::SequenceStep::from_cache(c, bad));
  auto out = gpu->step(b);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("outside the vocabulary"), std::string::npos);
  c.release(pool);
}

// The tiny Qwen2 on a backend started with `name` set to `value` in the
// environment (restored after).
absl::Status start_with_env(const char* name, const char* value) {
  auto m = model::load_model(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2");
  if (!m.ok()) return m.status();
  const char* old = std::getenv(name);
  const std::string saved = old != nullptr ? old : "";
  setenv(name, value, 1);
  backend::CudaBackendOptions opt;
  opt.kv_cache_bytes = 16 << 20;
  auto be = backend::make_cuda_backend(**m, opt);
  if (old != nullptr) {
    setenv(name, saved.c_str(), 1);
  } else {
    unsetenv(name);
  }
  return be.status();
}

// LAGSERVE_CUDA_GEMV takes 0, stream, mma or 1; anything else is refused
// at start with what it takes, not silently ignored.
TEST(CudaBackend, RejectsAnUnknownSkinnyGemmChoice) {
  REQUIRE_GPU();
  const absl::Status st = start_with_env("LAGSERVE_CUDA_GEMV", "fast");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("0, stream, mma or 1"), std::string::npos) << st;
}

}  // namespace
}  // namespace lagserve
