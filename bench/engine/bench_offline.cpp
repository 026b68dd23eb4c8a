// Offline throughput and KV memory of the engine on the CPU backend.
// Run: build/bench/bench_offline [--model default] [--threads 2] [--prompts 64]
//        [--prompt-tokens 512] [--gen-tokens 128] [--lagkv off|sink=16,lag=128,ratio=0.25]
//        [--kv-lengths 2048,4096,8192]
// Prints: generated and total tokens/s for the batch, peak KV blocks, the
// decode tokens/s of one sequence alone and of the whole batch, and the KV
// bytes one sequence holds after N tokens next to the retained-length formula.
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/sequence_cache.h"
#include "engine/model/model.h"
#include "engine/runtime/engine.h"

using namespace lagserve;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct BatchFigures {
  double gen_tok_s = 0, total_tok_s = 0, decode_tok_s = 0;
  int peak_blocks = 0;
  int64_t preemptions = 0;
};

// Runs n requests of prompt_tokens random tokens, each generating gen_tokens.
// decode_tok_s counts the steps in which no prompt token ran.
BatchFigures run_batch(backend::Backend& be, const model::Model& m, const kv::LagPolicy& policy,
                       int n, int prompt_tokens, int gen_tokens) {
  runtime::EngineConfig cfg;
  cfg.default_policy = policy;
  cfg.max_seqs = std::max(n, 1);
  runtime::Engine engine(be, *m.tokenizer, cfg);
  std::mt19937 rng(1);
  for (int i = 0; i < n; ++i) {
    runtime::Request r;
    r.id = std::to_string(i);
    for (int t = 0; t < prompt_tokens; ++t) r.prompt.push_back(100 + rng() % (m.config.vocab_size - 100));
    r.sampling.temperature = 0;
    r.stop.max_tokens = gen_tokens;
    r.stop.ignore_eos = true;
    if (!engine.add_request(std::move(r)).ok()) std::abort();
  }
  BatchFigures f;
  int64_t generated = 0, decode_tokens = 0;
  double decode_s = 0;
  const double t0 = now_s();
  while (engine.has_work()) {
    const auto before = engine.stats();
    const double s0 = now_s();
    auto outs = engine.step();
    if (!outs.ok()) std::abort();
    int64_t step_tokens = 0;
    for (const auto& o : *outs) step_tokens += static_cast<int64_t>(o.tokens.size());
    generated += step_tokens;
    // A pure decode step: every running sequence produced one token.
    if (step_tokens == before.n_running && before.n_waiting == 0 && step_tokens > 0) {
      decode_tokens += step_tokens;
      decode_s += now_s() - s0;
    }
  }
  const double secs = now_s() - t0;
  f.gen_tok_s = generated / secs;
  f.total_tok_s = (generated + static_cast<int64_t>(n) * prompt_tokens) / secs;
  f.decode_tok_s = decode_s > 0 ? decode_tokens / decode_s : 0;
  f.peak_blocks = engine.stats().peak_blocks_used;
  f.preemptions = engine.stats().n_preemptions;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "default", lagkv = "off", lengths = "2048,4096,8192";
  int threads = 2, n_prompts = 64, prompt_tokens = 512, gen_tokens = 128;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model_path = argv[i + 1];
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--prompts") n_prompts = std::atoi(argv[i + 1]);
    else if (a == "--prompt-tokens") prompt_tokens = std::atoi(argv[i + 1]);
    else if (a == "--gen-tokens") gen_tokens = std::atoi(argv[i + 1]);
    else if (a == "--lagkv") lagkv = argv[i + 1];
    else if (a == "--kv-lengths") lengths = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  auto policy = kv::LagPolicy::parse(lagkv);
  auto model = model::load_model(model_path);
  if (!policy.ok() || !model.ok()) {
    std::fprintf(stderr, "bad --lagkv or --model\n");
    return 1;
  }
  const model::Model& m = **model;
  backend::CpuBackendOptions opt;
  opt.n_threads = threads;
  opt.kv_cache_bytes = 4LL << 30;
  auto be = backend::make_cpu_backend(m, opt);
  if (!be.ok()) return 1;
  const int64_t bytes_per_block = backend::kv_bytes_per_token(m.config) * (*be)->block_size();

  std::printf("model %s, %d threads, KV policy %s\n", model_path.c_str(), threads,
              policy->to_string().c_str());
  const BatchFigures one = run_batch(**be, m, *policy, 1, prompt_tokens, gen_tokens);
  const BatchFigures all = run_batch(**be, m, *policy, n_prompts, prompt_tokens, gen_tokens);
  std::printf("| requests | prompt | gen | generated tok/s | total tok/s | decode tok/s | peak KV blocks (MiB) | preemptions |\n");
  std::printf("| 1 | %d | %d | %.1f | %.1f | %.1f | %d (%.1f) | %lld |\n", prompt_tokens,
              gen_tokens, one.gen_tok_s, one.total_tok_s, one.decode_tok_s, one.peak_blocks,
              one.peak_blocks * bytes_per_block / 1048576.0, static_cast<long long>(one.preemptions));
  std::printf("| %d | %d | %d | %.1f | %.1f | %.1f | %d (%.1f) | %lld |\n", n_prompts,
              prompt_tokens, gen_tokens, all.gen_tok_s, all.total_tok_s, all.decode_tok_s,
              all.peak_blocks, all.peak_blocks * bytes_per_block / 1048576.0,
              static_cast<long long>(all.preemptions));
  std::printf("batched decode / single decode: %.2fx\n", all.decode_tok_s / one.decode_tok_s);

  // KV bytes one sequence holds after N tokens, against the formula.
  std::printf("| tokens | KV bytes measured | formula (retained entries x bytes/entry) | ratio |\n");
  std::stringstream ss(lengths);
  std::string item;
  const int64_t per_token_layer = backend::kv_bytes_per_token(m.config) / m.config.n_layers;
  while (std::getline(ss, item, ',')) {
    const int n = std::stoi(item);
    kv::BlockPool pool((*be)->n_blocks());
    kv::SequenceCache cache(*policy, m.config.n_layers, (*be)->block_size());
    std::vector<int32_t> toks(n);
    std::mt19937 rng(n);
    for (int32_t& t : toks) t = 100 + rng() % (m.config.vocab_size - 100);
    for (int b = 0; b < n; b += 512) {
      const int c = std::min(512, n - b);
      if (!cache.reserve(pool, c).ok()) std::abort();
      backend::StepBatch batch;
      batch.seqs.push_back(backend::SequenceStep::from_cache(cache, std::span(toks).subspan(b, c)));
      if (!(*be)->step(batch).ok()) std::abort();
      cache.advance(pool, c);
    }
    int64_t layers_full = 0;
    for (int l = 0; l < m.config.n_layers; ++l) layers_full += policy->layer_compressed(l) ? 0 : 1;
    const int64_t measured_groups =
        (cache.has_full() ? static_cast<int64_t>(cache.full().cache_len()) * layers_full : 0) +
        (cache.has_compressed() ? static_cast<int64_t>(cache.compressed().cache_len()) *
                                      (m.config.n_layers - layers_full) : 0);
    const int64_t measured_bytes = measured_groups * per_token_layer;
    const int64_t formula_entries =
        layers_full * n + (m.config.n_layers - layers_full) * static_cast<int64_t>(policy->retained_len(n));
    const int64_t formula_bytes = formula_entries * per_token_layer;
    // NOTE: a block id spans every layer's storage, so with skip_layers both
    // groups' blocks carry space for all layers; without, the figures agree.
    const int64_t block_bytes = static_cast<int64_t>(cache.n_blocks()) * bytes_per_block;
    std::printf("| %d | %lld (in blocks: %lld) | %lld | %.3f |\n", n,
                static_cast<long long>(measured_bytes), static_cast<long long>(block_bytes),
                static_cast<long long>(formula_bytes),
                static_cast<double>(block_bytes) / formula_bytes);
    cache.release(pool);
  }
  return 0;
}
