// The engine's compressed incremental run against a masked full forward
// (DESIGN.md section 1, "One definition, two consumers"): for the same
// weights and tokens, a plain dense forward that applies the LagKV visibility
// mask (written here, selections from the engine/kv scoring reference on its
// own K/V) and the CPU backend fed in chunks, compacting its paged cache as it
// goes, give the same logits at every position (relative error < 1e-4) and
// the same selected positions.
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "tests/engine/backend/engine_incremental.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/lag_policy.h"
#include "engine/kv/sequence_cache.h"
#include "engine/model/model.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"

namespace lagserve {
namespace {

using testing_util::engine_forward;
using testing_util::ForwardRun;
using testing_util::rel_err;

// Dense forward over all T tokens with the visibility mask; with `follow`,
// each partition's mask keeps those positions instead of its own selection,
// which `kept` still records.
ForwardRun reference_forward(const model::Model& m, const std::vector<int32_t>& ids,
                             const kv::LagPolicy& P, const testing_util::Selections* follow = nullptr) {
  const auto& c = m.config;
  const auto& w = m.weights;
  const int T = static_cast<int>(ids.size()), d = c.d_model, hd = c.head_dim;
  const int qd = c.q_dim(), kvd = c.kv_dim(), qkvd = qd + 2 * kvd, ff = c.d_ff;
  const int group = c.n_heads / c.n_kv_heads;
  std::vector<float> x(T * d), h(T * d), qkv(T * qkvd), att(T * qd), gu(T * 2 * ff), act(T * ff);
  std::vector<int32_t> pos(T);
  for (int t = 0; t < T; ++t) {
    std::copy_n(&w.tok_embd[static_cast<size_t>(ids[t]) * d], d, &x[t * d]);
    pos[t] = t;
  }
  ForwardRun run;
  for (int l = 0; l < c.n_layers; ++l) {
    const auto& L = w.layers[l];
    kernels::rmsnorm(x.data(), L.attn_norm.data(), h.data(), T, d, c.rms_eps);
    kernels::matmul_nt(h.data(), L.wqkv.data(), qkv.data(), T, qkvd, d);
    if (!L.bqkv.empty()) {
      for (int t = 0; t < T; ++t) for (int j = 0; j < qkvd; ++j) qkv[t * qkvd + j] += L.bqkv[j];
    }
    kernels::rope_neox(qkv.data(), T, qkvd, c.n_heads, hd, pos.data(), c.rope_inv_freq.data());
    kernels::rope_neox(qkv.data() + qd, T, qkvd, c.n_kv_heads, hd, pos.data(), c.rope_inv_freq.data());
    const bool compressed = P.layer_compressed(l);
    // selected[head][position] for positions of scored partitions.
    std::vector<std::vector<char>> selected(c.n_kv_heads, std::vector<char>(T, 0));
    if (compressed) {
      for (int kh = 0; kh < c.n_kv_heads; ++kh) {
        for (int p = 0; P.sink + (p + 2) * P.lag <= T; ++p) {
          const int cur = P.sink + p * P.lag, ref = cur + P.lag;
          const float* kb = qkv.data() + qd + kh * hd;
          const float* vb = qkv.data() + qd + kvd + kh * hd;
          auto scores = kv::lag_scores(kb + cur * qkvd, kb + ref * qkvd, vb + cur * qkvd,
                                       vb + ref * qkvd, P.lag, hd, qkvd, P.score_v_weight);
          std::vector<int32_t> kept;
          for (int32_t off : kv::lag_select(scores, P.keep)) kept.push_back(cur + off);
          for (int32_t pos : follow != nullptr ? follow->at({l, kh, p}) : kept) selected[kh][pos] = 1;
          run.kept[{l, kh, p}] = kept;
        }
      }
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    for (int t = 0; t < T; ++t) {
      for (int qh = 0; qh < c.n_heads; ++qh) {
        const int kh = qh / group;
        const float* q = &qkv[t * qkvd + qh * hd];
        std::vector<double> s(t + 1, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          if (compressed && !kv::lag_visible(P, t, j, selected[kh][j])) continue;
          const float* k = &qkv[j * qkvd + qd + kh * hd];
          double dot = 0;
          for (int e = 0; e < hd; ++e) dot += static_cast<double>(q[e]) * k[e];
          s[j] = dot * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& v : s) sum += (v = std::exp(v - mx));
        for (int e = 0; e < hd; ++e) {
          double acc = 0;
          for (int j = 0; j <= t; ++j) acc += s[j] * qkv[j * qkvd + qd + kvd + kh * hd + e];
          att[t * qd + qh * hd + e] = static_cast<float>(acc / sum);
        }
      }
    }
    kernels::matmul_nt(att.data(), L.wo.data(), x.data(), T, d, qd, true);
    kernels::rmsnorm(x.data(), L.ffn_norm.data(), h.data(), T, d, c.rms_eps);
    kernels::matmul_nt(h.data(), L.w_gate_up.data(), gu.data(), T, 2 * ff, d);
    kernels::swiglu(gu.data(), act.data(), T, ff);
    kernels::matmul_nt(act.data(), L.w_down.data(), x.data(), T, d, ff, true);
  }
  kernels::rmsnorm(x.data(), w.out_norm.data(), h.data(), T, d, c.rms_eps);
  std::vector<float> logits(static_cast<size_t>(T) * c.vocab_size);
  kernels::matmul_nt(h.data(), w.output_head().data(), logits.data(), T, c.vocab_size, d);
  for (int t = 0; t < T; ++t) {
    run.logits.emplace_back(logits.begin() + static_cast<size_t>(t) * c.vocab_size,
                            logits.begin() + static_cast<size_t>(t + 1) * c.vocab_size);
  }
  return run;
}

struct Case {
  std::string model;  // under tests/golden/models, or "default"
  std::string policy;
  int length;
  std::vector<int> chunks;
  int block_size;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.model << " " << c.policy << " T=" << c.length;
}

class LagConformance : public ::testing::TestWithParam<Case> {};

TEST_P(LagConformance, IncrementalEqualsMaskedFullForward) {
  const Case& c = GetParam();
  const std::string path = testing_util::conformance_model_path(c.model);
  if (path.empty()) GTEST_SKIP() << "no default model";
  auto m = model::load_model(path);
  ASSERT_TRUE(m.ok()) << m.status();
  auto P = kv::LagPolicy::parse(c.policy);
  ASSERT_TRUE(P.ok()) << P.status();
  const std::vector<int32_t> ids = testing_util::conformance_ids(c.length, (*m)->config.vocab_size);

  const ForwardRun ref = reference_forward(**m, ids, *P);
  ASSERT_FALSE(ref.kept.empty()) << "the sequence must be long enough to compress";
  // The policy must matter (else this test proves nothing), except with
  // keep == lag, where it keeps everything and must change nothing.
  const ForwardRun full = reference_forward(**m, ids, kv::LagPolicy{});
  double max_diff = 0;
  for (size_t t = 0; t < full.logits.size(); ++t) {
    max_diff = std::max(max_diff, rel_err(ref.logits[t], full.logits[t]));
  }
  if (P->keep == P->lag) {
    EXPECT_LT(max_diff, 1e-5);
  } else {
    EXPECT_GT(max_diff, 1e-3) << "compression did not change any logits";
  }
  for (int chunk : c.chunks) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    const ForwardRun got = engine_forward(**m, ids, *P, chunk, c.block_size);
    ASSERT_EQ(got.logits.size(), ref.logits.size());
    double worst = 0;
    for (size_t t = 0; t < ref.logits.size(); ++t) {
      const double e = rel_err(got.logits[t], ref.logits[t]);
      worst = std::max(worst, e);
      EXPECT_LT(e, 1e-4) << "position " << t;
    }
    // The engine compacts partitions whose reference partition completed,
    // which is every partition the reference scored.
    EXPECT_EQ(got.kept, ref.kept);
    std::printf("[ %s %s T=%d ] chunk %d: worst relative error %.3g, %zu compactions\n",
                c.model.c_str(), c.policy.c_str(), c.length, chunk, worst, got.kept.size());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Policies, LagConformance,
    ::testing::Values(
        Case{"tiny-llama", "sink=4,lag=8,keep=2", 77, {1, 5, 8, 77}, 4},
        Case{"tiny-qwen2", "sink=0,lag=6,ratio=0.5", 61, {1, 7, 61}, 16},
        Case{"tiny-llama", "sink=3,lag=5,keep=5", 40, {1, 9}, 4},  // keep = L: evicts nothing
        Case{"tiny-qwen2", "sink=2,lag=7,keep=1,skip_layers=1", 70, {1, 12}, 3},
        Case{"default", "sink=16,lag=32,ratio=0.25", 200, {1, 37, 200}, 16}));

// CpuBackendOptions::follow_selections, with which a reference follows the
// GPU's selections (tests/engine/cuda/cuda_backend_test.cpp): the engine told
// to keep K random positions of each partition gives the logits of the masked
// full forward with those positions kept, and reports the selections its own
// scores make, which are the full forward's own on the same keys.
TEST(LagConformanceFollow, KeepsTheGivenPositionsAndReportsItsOwn) {
  auto m = model::load_model(testing_util::conformance_model_path("tiny-qwen2"));
  ASSERT_TRUE(m.ok()) << m.status();
  auto P = kv::LagPolicy::parse("sink=2,lag=8,keep=3");
  ASSERT_TRUE(P.ok()) << P.status();
  const std::vector<int32_t> ids = testing_util::conformance_ids(75, (*m)->config.vocab_size);
  const ForwardRun own = reference_forward(**m, ids, *P);
  std::mt19937 rng(7);
  testing_util::Selections given;
  int differ = 0;
  for (const auto& [key, kept] : own.kept) {
    const int32_t first = P->sink + std::get<2>(key) * P->lag;
    std::vector<int32_t> offs(P->lag);
    for (int32_t i = 0; i < P->lag; ++i) offs[i] = i;
    std::shuffle(offs.begin(), offs.end(), rng);
    offs.resize(P->keep);
    std::sort(offs.begin(), offs.end());
    for (int32_t& o : offs) o += first;
    differ += offs != kept;
    given[key] = offs;
  }
  ASSERT_GT(differ, static_cast<int>(own.kept.size()) / 2) << "the given selections must differ from the own";
  const ForwardRun ref = reference_forward(**m, ids, *P, &given);
  double moved = 0;
  for (size_t t = 0; t < ref.logits.size(); ++t) moved = std::max(moved, rel_err(ref.logits[t], own.logits[t]));
  ASSERT_GT(moved, 1e-3) << "the given selections must change the logits";
  for (int chunk : {1, 11, 75}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    const ForwardRun got = engine_forward(**m, ids, *P, chunk, 4, 0, false, &given);
    ASSERT_EQ(got.logits.size(), ref.logits.size());
    for (size_t t = 0; t < ref.logits.size(); ++t) {
      EXPECT_LT(rel_err(got.logits[t], ref.logits[t]), 1e-4) << "position " << t;
    }
    EXPECT_EQ(got.kept, ref.kept);
    EXPECT_NE(got.kept, given);
  }
}

// Random policies, lengths and chunk sizes on the tiny Llama: the engine's
// logits, kept positions and cache lengths (checked after every step in
// engine_forward) agree with the masked full forward.
TEST(LagConformanceRandom, RandomPoliciesLengthsAndChunks) {
  auto m = model::load_model(testing_util::conformance_model_path("tiny-llama"));
  ASSERT_TRUE(m.ok()) << m.status();
  std::mt19937 rng(2026);
  for (int trial = 0; trial < 12; ++trial) {
    kv::LagPolicyFields f;
    f.sink = static_cast<int32_t>(rng() % 6);
    f.lag = 1 + static_cast<int32_t>(rng() % 9);
    f.keep = 1 + static_cast<int32_t>(rng() % *f.lag);
    f.score_v_weight = static_cast<float>(rng() % 3) * 0.5f;
    if (rng() % 3 == 0) f.skip_layers = std::vector<int32_t>{static_cast<int32_t>(rng() % 2)};
    auto P = kv::LagPolicy::from_fields(f);
    ASSERT_TRUE(P.ok()) << P.status();
    const int T = *f.sink + 2 * *f.lag + 1 + static_cast<int>(rng() % 60);
    const int chunk = 1 + static_cast<int>(rng() % 20);
    const int block = 1 + static_cast<int>(rng() % 8);
    SCOPED_TRACE(P->to_string() + " T=" + std::to_string(T) + " chunk=" + std::to_string(chunk) +
                 " block=" + std::to_string(block));
    std::vector<int32_t> ids(T);
    for (int32_t& t : ids) t = 3 + static_cast<int32_t>(rng() % 300);
    const ForwardRun ref = reference_forward(**m, ids, *P);
    const ForwardRun got = engine_forward(**m, ids, *P, chunk, block);
    ASSERT_EQ(got.logits.size(), ref.logits.size());
    for (size_t t = 0; t < ref.logits.size(); ++t) {
      ASSERT_LT(rel_err(got.logits[t], ref.logits[t]), 1e-4) << "position " << t;
    }
    EXPECT_EQ(got.kept, ref.kept);
  }
}

}  // namespace
}  // namespace lagserve
