// Decode throughput of the CUDA backend at a batch size and context length,
// with the KV policy off and on, against the HBM roofline; and how many
// sequences of that length fit the cache under each policy.
// Run (GPU machine):
//   build-gpu/bench/bench_cuda_decode --model /tmp/qwen2.5-1.5b-shape --batch 32
//       --context 32768 --policy off --policy sink=16,lag=128,ratio=0.25 [--steps 256]
// Each sequence is prefilled with random tokens in chunks that end on
// partition boundaries (DESIGN.md section 2), then all decode together for
// `steps` steps, greedy, sampled on the device (only the tokens come back, as
// in the server). Printed per policy: mean step time, tok/s, the bytes a step
// must read (bf16 weights + every sequence's cached K/V) over the step time as
// a share of --hbm-tbs, the mean time of the steps with a compaction against
// those without (the amortised cost of LagKV), and the cache's capacity in
// sequences of context + steps tokens; and where a decode step's wall time
// goes on the host (CudaStepTimes: the GPU idles at least through the
// planning). --tensor-parallel-size N shards the
// model over GPUs 0..N-1 (the roofline is then N GPUs').
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <cuda_profiler_api.h>

#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/tensor_parallel.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/sequence_cache.h"
#include "engine/model/model.h"
#include "kernels/cuda/cuda_check.h"

using namespace lagserve;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

[[noreturn]] void die(const absl::Status& st) {
  std::fprintf(stderr, "bench_cuda_decode: %s\n", std::string(st.message()).c_str());
  std::exit(1);
}

struct Result {
  std::string policy;
  double step_ms = 0, tok_s = 0, roofline_pct = 0, compact_step_ms = 0, plain_step_ms = 0;
  double capacity = 0, prefill_tok_s = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"CUDA backend decode throughput"};
  std::string model_path = "default";
  std::vector<std::string> policies = {"off", "sink=16,lag=128,ratio=0.25"};
  int batch = 32, context = 32768, steps = 256, chunk = 8192;
  double util = 0.9, hbm_tbs = 4.25;
  int tp_size = 0;  // 0: the plain backend; N >= 1: the tensor-parallel one
  app.add_option("--model", model_path);
  app.add_option("--batch", batch);
  app.add_option("--context", context);
  app.add_option("--steps", steps, "decode steps timed");
  app.add_option("--chunk", chunk, "prefill chunk (tokens)");
  app.add_option("--policy", policies, "'off' or a policy spec; repeat to compare several")
      ->capture_default_str();
  app.add_option("--gpu-memory-utilization", util);
  app.add_option("--hbm-tbs", hbm_tbs, "HBM bandwidth for the roofline (TB/s)");
  app.add_option("--tensor-parallel-size", tp_size, "shard over N GPUs (0: no tensor parallelism)");
  CLI11_PARSE(app, argc, argv);

  auto model = model::load_model(model_path);
  if (!model.ok()) die(model.status());
  const model::ModelConfig& cfg = (*model)->config;
  backend::CudaBackendOptions opt;
  opt.gpu_memory_utilization = util;
  opt.max_batched_tokens = std::max(chunk, batch);
  opt.max_seqs = batch;
  backend::CudaStepTimes host;  // the decode steps' host times (rank 0's with tensor parallelism)
  opt.step_times = &host;
  backend::TensorParallelOptions tp;
  tp.size = tp_size;
  auto be = tp_size == 0 ? backend::make_cuda_backend(**model, opt)
                         : backend::make_tensor_parallel_backend(**model, opt, tp);
  if (!be.ok()) die(be.status());
  const int n_gpus = std::max(tp_size, 1);
  backend::Backend& B = **be;
  int64_t weight_bytes = static_cast<int64_t>((*model)->weights.tok_embd.size() +
                                              (*model)->weights.output.size()) * 2;
  for (const auto& L : (*model)->weights.layers) {
    weight_bytes += static_cast<int64_t>(L.wqkv.size() + L.wo.size() + L.w_gate_up.size() + L.w_down.size()) * 2;
  }
  // NOTE: a tied head is read twice per step in effect (embedding rows are
  // few; the head reads it all), so count it once, as the head.
  const int64_t kv_token_layer = 2LL * cfg.kv_dim() * 2;  // K and V of one token in one layer
  std::printf("model %s: %d layers, d %d, heads %d/%d, vocab %d; weights %.2f GB bf16; cache %d blocks of %d\n",
              model_path.c_str(), cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size,
              weight_bytes / 1e9, B.n_blocks(), B.block_size());

  if (tp_size > 0) {
    std::printf("tensor parallel size %d\n", tp_size);
  }
  std::mt19937 rng(7);
  std::vector<Result> results;
  for (const std::string& spec : policies) {
    auto pol = kv::LagPolicy::parse(spec);
    if (!pol.ok()) die(pol.status());
    kv::BlockPool pool(B.n_blocks());
    std::vector<kv::SequenceCache> seqs;
    std::vector<std::vector<int32_t>> prompts(batch);
    for (int b = 0; b < batch; ++b) {
      seqs.emplace_back(*pol, cfg.n_layers, B.block_size());
      prompts[b].resize(context);
      for (int32_t& t : prompts[b]) t = static_cast<int32_t>(rng() % cfg.vocab_size);
    }
    std::vector<int32_t> next(batch);
    // Prefill one sequence at a time, in chunks ending on partition boundaries.
    const double t_pre = now_s();
    for (int b = 0; b < batch; ++b) {
      int32_t done = 0;
      while (done < context) {
        int32_t end = std::min(context, done + chunk);
        if (pol->enabled && end < context) {
          const int32_t aligned = pol->sink + (end - pol->sink) / pol->lag * pol->lag;
          if (aligned > done) end = aligned;
        }
        std::span<const int32_t> toks(prompts[b].data() + done, end - done);
        if (auto st = seqs[b].reserve(pool, static_cast<int32_t>(toks.size())); !st.ok()) die(st);
        backend::StepBatch sb;
        sb.seqs.push_back(backend::SequenceStep::from_cache(seqs[b], toks));
        auto out = B.step(sb);
        if (!out.ok()) die(out.status());
        seqs[b].advance(pool, static_cast<int32_t>(toks.size()));
        auto row = out->last_row(0);
        next[b] = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
        done = end;
      }
    }
    Result r;
    r.policy = pol->to_string();
    r.prefill_tok_s = static_cast<double>(batch) * context / (now_s() - t_pre);
    const int32_t blocks_one = seqs[0].n_blocks();

    // Decode: every sequence one token per step.
    double total = 0, compact_t = 0, plain_t = 0, kv_bytes = 0;
    int n_compact = 0, n_plain = 0;
    // Greedy, sampled on the device as the server does: only the tokens come back.
    backend::DeviceSampling greedy;
    greedy.temperature = 0.f;
    // Profilers started with profiling off (ncu --profile-from-start off) see the decode steps only.
    LAGSERVE_CUDA_CHECK(cudaProfilerStart());
    host = {};
    for (int s = 0; s < steps; ++s) {
      backend::StepBatch sb;
      bool compacts = false;
      for (int b = 0; b < batch; ++b) {
        if (auto st = seqs[b].reserve(pool, 1); !st.ok()) die(st);
      }
      for (int b = 0; b < batch; ++b) {
        sb.seqs.push_back(backend::SequenceStep::from_cache(seqs[b], std::span(&next[b], 1)));
        sb.seqs.back().sampling = &greedy;
        sb.seqs.back().need_logits = false;
        const auto& q = sb.seqs.back();
        compacts = compacts || q.compressed_after > q.compressed_before;
        for (int32_t l = 0; l < cfg.n_layers; ++l) {
          kv_bytes += static_cast<double>((q.compressed_layer(l) ? q.lag_cache_len : q.cache_len) + 1) * kv_token_layer;
        }
      }
      const double t0 = now_s();
      auto out = B.step(sb);
      const double dt = now_s() - t0;
      if (!out.ok()) die(out.status());
      for (int b = 0; b < batch; ++b) {
        seqs[b].advance(pool, 1);
        next[b] = out->tokens[b];
      }
      total += dt;
      (compacts ? compact_t : plain_t) += dt;
      (compacts ? n_compact : n_plain) += 1;
    }
    LAGSERVE_CUDA_CHECK(cudaProfilerStop());
    r.step_ms = total / steps * 1e3;
    r.tok_s = batch * steps / total;
    const double bytes_per_step = weight_bytes + kv_bytes / steps;
    r.roofline_pct = 100.0 * (bytes_per_step / (n_gpus * hbm_tbs * 1e12)) / (total / steps);
    r.compact_step_ms = n_compact > 0 ? compact_t / n_compact * 1e3 : 0;
    r.plain_step_ms = n_plain > 0 ? plain_t / n_plain * 1e3 : 0;
    r.capacity = static_cast<double>(B.n_blocks() - 1) /
                 kv::SequenceCache::blocks_for(*pol, cfg.n_layers, B.block_size(), context + steps);
    std::printf("policy %s: prefill %.0f tok/s; decode %.3f ms/step, %.0f tok/s, %.1f%% of the HBM roofline "
                "(%.2f GB read per step); steps with compaction %d (%.3f ms) vs without %d (%.3f ms); "
                "one sequence holds %d blocks after prefill; capacity %.1f sequences of %d tokens\n",
                r.policy.c_str(), r.prefill_tok_s, r.step_ms, r.tok_s, r.roofline_pct, bytes_per_step / 1e9,
                n_compact, r.compact_step_ms, n_plain, r.plain_step_ms, blocks_one, r.capacity,
                context + steps);
    const double us = 1e6 / std::max<int64_t>(host.steps, 1);
    std::printf("policy %s: host time a decode step: plan and upload %.1f us, launch %.1f us, wait for the GPU "
                "%.1f us, results %.1f us\n",
                r.policy.c_str(), host.plan_s * us, host.launch_s * us, host.wait_s * us, host.after_s * us);
    std::fflush(stdout);
    for (auto& s : seqs) s.release(pool);
    results.push_back(r);
  }
  std::printf("\n| policy | batch | context | ms/step | tok/s | HBM roofline | compaction overhead | capacity (seqs) |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : results) {
    const double overhead = r.plain_step_ms > 0 ? (r.step_ms / r.plain_step_ms - 1) * 100 : 0;
    std::printf("| %s | %d | %d | %.3f | %.0f | %.1f%% | %+.1f%% | %.1f |\n", r.policy.c_str(), batch,
                context, r.step_ms, r.tok_s, r.roofline_pct, overhead, r.capacity);
  }
  return 0;
}
