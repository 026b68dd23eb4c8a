// The lagserve binary: `serve` (OpenAI-compatible HTTP and gRPC; not in builds
// with LAGSERVE_SERVER=OFF, HTTP alone with LAGSERVE_GRPC=OFF), `generate`
// (one prompt, or a JSONL batch) and `tokenize`. `--version` says which.
#include <CLI/CLI.hpp>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "server/cli.h"
#include "server/grpc_service.h"

namespace {

// Everything of EngineArgs but the model and the KV policy.
void add_backend_options(CLI::App* app, lagserve::cli::EngineArgs& e) {
  app->add_option("--threads", e.threads, "CPU threads (0: all cores)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--device", e.device,
                  "cpu or cuda (default: cuda when this build has it and a GPU is present)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app->add_option("--kv-cache-mb", e.kv_cache_mb,
                  "KV cache size in MiB (default: 1024 on the CPU; on CUDA what "
                  "--gpu-memory-utilization leaves after the weights)")
      ->check(CLI::PositiveNumber);
  app->add_option("--gpu-memory-utilization", e.gpu_memory_utilization,
                  "Share of the GPU's memory to use for weights, activations and KV cache (cuda)")
      ->capture_default_str()->check(CLI::Range(0.01, 1.0));
  app->add_option("--tensor-parallel-size,--tp", e.tensor_parallel_size,
                  "GPUs to shard the model over, devices 0..N-1 with NCCL (cuda)")
      ->capture_default_str()->check(CLI::Range(1, 8));
  app->add_option("--max-batched-tokens", e.max_batched_tokens, "Token budget per engine step")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-seqs", e.max_seqs, "Sequences running at once")
      ->capture_default_str()->check(CLI::PositiveNumber);
}

void add_engine_options(CLI::App* app, lagserve::cli::EngineArgs& e) {
  app->add_option("--model,-m", e.model, "GGUF file, Hugging Face folder, or 'default'")
      ->capture_default_str();
  add_backend_options(app, e);
  app->add_option("--lagkv", e.lagkv,
                  "KV policy: 'off' or e.g. 'sink=16,lag=128,ratio=0.25' (default: the "
                  "checkpoint's policy, else off)");
}

}  // namespace

int main(int argc, char** argv) {
#ifdef __GLIBC__
  // NOTE: a server allocates and frees large buffers (logits rows, step
  // scratch) from many threads. glibc raises its mmap threshold to the size of
  // each large block freed, after which such blocks come from the arenas and
  // fragment them: RSS crept up 10% in a 10-minute soak. A fixed threshold
  // keeps large blocks in mmap (returned to the system on free), and fewer
  // arenas bound the rest.
  mallopt(M_MMAP_THRESHOLD, 256 << 10);
  mallopt(M_ARENA_MAX, 4);
#endif
  CLI::App app{"lagserve: LLM inference with LagKV KV-cache compression"};
  app.require_subcommand(1);

  lagserve::cli::GenerateArgs gen;
  CLI::App* g = app.add_subcommand(
      "generate", "Generate text from a prompt (streamed to stdout), or from a JSONL batch");
  add_engine_options(g, gen.engine);
  g->add_option("--prompt,-p", gen.prompt, "Prompt text")->capture_default_str();
  g->add_flag("--chat", gen.chat, "Wrap the prompt in the model's chat template");
  g->add_option("--chat-template", gen.chat_template,
                "Chat template to use when the model's is not recognised")
      ->check(CLI::IsMember({"chatml", "llama3"}));
  g->add_option("--system", gen.system, "System message (with --chat)");
  g->add_option("--max-tokens,-n", gen.max_tokens, "Tokens to generate")
      ->capture_default_str()->check(CLI::PositiveNumber);
  g->add_option("--temperature,-t", gen.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  g->add_option("--top-p", gen.top_p, "Nucleus sampling")->capture_default_str();
  g->add_option("--top-k", gen.top_k, "Top-k sampling (0: off)")->capture_default_str();
  g->add_option("--min-p", gen.min_p, "Min-p sampling")->capture_default_str();
  g->add_option("--seed", gen.seed, "Sampling seed");
  g->add_option("--stop", gen.stop, "Stop string (repeatable)");
  g->add_flag("--ignore-eos", gen.ignore_eos, "Keep generating past end-of-sequence tokens");
  g->add_option("--prompts", gen.prompts_file,
                "Batch mode: a JSONL file of requests, all run concurrently");
  g->add_option("--output,-o", gen.output_file, "Batch mode: where to write JSONL results (default: stdout)");
  g->add_option("--trace-evictions", gen.trace_evictions,
                "Write the positions kept by every KV compaction (JSONL)");

  std::string features = "none";  // the network fronts of `serve`
#ifdef LAGSERVE_WITH_SERVE
  const bool grpc = lagserve::server::GrpcServer::built_in();
  features = grpc ? "http grpc" : "http";
  lagserve::cli::ServeArgs srv;
  if (!grpc) srv.grpc_port = -1;
  CLI::App* sv = app.add_subcommand(
      "serve", grpc ? "Serve the OpenAI-compatible HTTP API and the gRPC API (flags also read "
                      "LAGSERVE_*)"
                    : "Serve the OpenAI-compatible HTTP API; this build has no gRPC (flags also "
                      "read LAGSERVE_*)");
  add_engine_options(sv, srv.core.engine);
  sv->get_option("--model")->envname("LAGSERVE_MODEL");
  sv->get_option("--lagkv")->envname("LAGSERVE_LAGKV");
  sv->get_option("--threads")->envname("LAGSERVE_THREADS");
  sv->get_option("--kv-cache-mb")->envname("LAGSERVE_KV_CACHE_MB");
  sv->get_option("--device")->envname("LAGSERVE_DEVICE");
  sv->get_option("--gpu-memory-utilization")->envname("LAGSERVE_GPU_MEMORY_UTILIZATION");
  sv->get_option("--tensor-parallel-size")->envname("LAGSERVE_TENSOR_PARALLEL_SIZE");
  sv->add_option("--host", srv.host, "Address to bind (loopback by default)")
      ->capture_default_str()->envname("LAGSERVE_HOST");
  sv->add_option("--port", srv.port, "HTTP port")
      ->capture_default_str()->envname("LAGSERVE_PORT")->check(CLI::Range(0, 65535));
  sv->add_option("--grpc-port", srv.grpc_port,
                 grpc ? "gRPC port (-1: no gRPC)"
                      : "gRPC port: only -1, this build has no gRPC (-DLAGSERVE_GRPC=OFF)")
      ->capture_default_str()->envname("LAGSERVE_GRPC_PORT")->check(CLI::Range(-1, 65535));
  auto* key = sv->add_option("--api-key", srv.api_key,
                             "Require 'Authorization: Bearer KEY' (all paths but /health)")
                  ->envname("LAGSERVE_API_KEY");
  sv->add_option("--api-key-file", srv.api_key_file, "Read the API key from the first line of F")
      ->envname("LAGSERVE_API_KEY_FILE")->excludes(key)->check(CLI::ExistingFile);
  sv->add_option("--max-queued-requests", srv.core.max_queued_requests,
                 "Requests waiting for the engine before new ones get 429")
      ->capture_default_str()->envname("LAGSERVE_MAX_QUEUED_REQUESTS")
      ->check(CLI::PositiveNumber);
  sv->add_option("--max-model-len", srv.core.max_model_len,
                 "Longest prompt + output in tokens (0: the model's context)")
      ->capture_default_str()->envname("LAGSERVE_MAX_MODEL_LEN")->check(CLI::NonNegativeNumber);
  sv->add_option("--request-timeout", srv.core.request_timeout_s,
                 "Seconds a request may run before it is cancelled (0: no limit)")
      ->capture_default_str()->envname("LAGSERVE_REQUEST_TIMEOUT")->check(CLI::NonNegativeNumber);
  sv->add_option("--max-n", srv.core.max_n, "Most choices (n) per request")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sv->add_option("--served-model-name", srv.core.served_model_name,
                 "Model name in the API (default: the file or folder name)")
      ->envname("LAGSERVE_SERVED_MODEL_NAME");
  sv->add_option("--chat-template", srv.core.chat_template,
                 "Chat template to use when the model's is not recognised")
      ->check(CLI::IsMember({"chatml", "llama3"}));
  sv->add_option("--drain-timeout", srv.drain_timeout_s,
                 "Seconds to let running requests finish after SIGTERM")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sv->add_option("--max-body-mb", srv.max_body_mb, "Largest request body (MiB); larger get 413")
      ->capture_default_str()->check(CLI::PositiveNumber);
  sv->add_option("--log-level", srv.log_level, "trace, debug, info, warn, error")
      ->capture_default_str()->envname("LAGSERVE_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
#endif

  lagserve::cli::TokenizeArgs tok;
  CLI::App* t = app.add_subcommand("tokenize", "Print the token ids of TEXT as JSON");
  t->add_option("--model,-m", tok.model, "GGUF file, Hugging Face folder, or 'default'")
      ->capture_default_str();
  t->add_option("text", tok.text, "Text to tokenize")->required();
  t->add_flag("--add-bos", tok.add_bos, "Prepend BOS even if the model does not by default");

  lagserve::cli::EvalArgs ev;
  CLI::App* e = app.add_subcommand(
      "eval", "Long-context accuracy under KV compression: CSV and a PNG plot");
  e->add_option("--model,-m", ev.models, "GGUF file, Hugging Face folder, or 'default' (repeatable)")
      ->capture_default_str();
  add_backend_options(e, ev.engine);
  auto* task = e->add_option("--task", ev.tasks, "passkey, multikey, facts (repeatable)")
                   ->delimiter(',')->check(CLI::IsMember({"passkey", "multikey", "facts"}));
  e->add_option("--length", ev.lengths, "Prompt tokens per task sample (repeatable, e.g. 2048,4096)")
      ->delimiter(',')->check(CLI::Range(16, 1 << 20));
  e->add_option("--data", ev.data, "JSONL of {\"prompt\", \"answer\"} lines, in place of --task")
      ->excludes(task)->check(CLI::ExistingFile);
  e->add_option("--policy", ev.policies, "off, Nx (keep 1/N of each partition) or a LagKV spec")
      ->capture_default_str();
  e->add_option("--samples", ev.samples, "Samples per task and length")
      ->capture_default_str()->check(CLI::PositiveNumber);
  e->add_option("--seed", ev.seed, "Seed of the task samples")->capture_default_str();
  e->add_option("--csv", ev.csv, "Results table")->capture_default_str();
  e->add_option("--plot", ev.plot, "Accuracy against compression, PNG ('' for none)")
      ->capture_default_str();

  app.set_version_flag("--version", "lagserve (features: " + features + ")",
                       "Print what `serve` has in this build (http, grpc) and exit");

  CLI11_PARSE(app, argc, argv);
  gen.engine.seed = gen.seed.value_or(0);
#ifdef LAGSERVE_WITH_SERVE
  if (sv->parsed()) return lagserve::cli::run_serve(srv);
#endif
  if (e->parsed()) return lagserve::cli::run_eval(ev);
  if (g->parsed()) {
    return gen.prompts_file.empty() ? lagserve::cli::run_generate(gen)
                                    : lagserve::cli::run_batch(gen);
  }
  return lagserve::cli::run_tokenize(tok);
}
