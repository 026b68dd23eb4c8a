// Prefill and decode throughput of the CPU backend on one sequence.
// Run: build/bench/bench_cpu_forward [--model default] [--threads 2]
//        [--prompt-tokens 512] [--decode-tokens 128] [--reps 3]
// Prints the best of `reps` runs: prefill tok/s over the whole prompt (one
// chunk) and decode tok/s over decode-tokens single-token steps.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/block_pool.h"
#include "engine/kv/sequence_kv.h"
#include "engine/model/model.h"
#include "kernels/cpu/blas.h"

using namespace lagserve;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "default";
  int threads = 2, prompt_tokens = 512, decode_tokens = 128, reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model_path = argv[i + 1];
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--prompt-tokens") prompt_tokens = std::atoi(argv[i + 1]);
    else if (a == "--decode-tokens") decode_tokens = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  auto model = model::load_model(model_path);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  backend::CpuBackendOptions opt;
  opt.n_threads = threads;
  opt.kv_cache_bytes = backend::kv_bytes_per_token((*model)->config) *
                       (prompt_tokens + decode_tokens + 64);
  auto be = backend::make_cpu_backend(**model, opt);
  if (!be.ok()) return 1;
  kv::BlockPool pool((*be)->n_blocks());
  std::mt19937 rng(7);
  std::vector<int32_t> prompt(prompt_tokens);
  for (int32_t& t : prompt) t = 100 + static_cast<int32_t>(rng() % ((*model)->config.vocab_size - 100));

  double best_prefill = 0, best_decode = 0;
  for (int rep = 0; rep < reps; ++rep) {
    kv::SequenceKv seq((*be)->block_size());
    auto step = [&](std::span<const int32_t> toks) {
      if (!seq.reserve(pool, static_cast<int32_t>(toks.size())).ok()) std::abort();
      backend::StepBatch b;
      b.seqs.push_back(backend::SequenceStep::uncompressed(toks, seq.logical_len(), seq.cache_len(),
                                                           seq.block_table(), false));
      auto out = (*be)->step(b);
      if (!out.ok()) std::abort();
      seq.advance(static_cast<int32_t>(toks.size()));
      auto row = out->last_row(0);
      return static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    };
    double t0 = now_s();
    int32_t next = step(prompt);
    best_prefill = std::max(best_prefill, prompt_tokens / (now_s() - t0));
    t0 = now_s();
    for (int i = 0; i < decode_tokens; ++i) next = step(std::span(&next, 1));
    best_decode = std::max(best_decode, decode_tokens / (now_s() - t0));
    seq.release(pool);
  }
  std::printf("model %s, %d threads, OpenBLAS kernels %s, best of %d\n", model_path.c_str(),
              threads, kernels::blas_corename().c_str(), reps);
  std::printf("| prefill tok/s (%d-token prompt) | decode tok/s (%d tokens) |\n", prompt_tokens,
              decode_tokens);
  std::printf("| %.1f | %.1f |\n", best_prefill, best_decode);
  return 0;
}
