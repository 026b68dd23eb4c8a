// The lagserve binary: `generate` (one prompt, or a JSONL batch) and
// `tokenize` (the HTTP/gRPC server joins them later).
#include <CLI/CLI.hpp>

#include "server/cli.h"

namespace {

void add_engine_options(CLI::App* app, lagserve::cli::EngineArgs& e) {
  app->add_option("--model,-m", e.model, "GGUF file, Hugging Face folder, or 'default'")
      ->capture_default_str();
  app->add_option("--threads", e.threads, "CPU threads (0: all cores)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--kv-cache-mb", e.kv_cache_mb, "KV cache size in MiB")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--lagkv", e.lagkv,
                  "KV policy: 'off' or e.g. 'sink=16,lag=128,ratio=0.25' (default: the "
                  "checkpoint's policy, else off)");
  app->add_option("--max-batched-tokens", e.max_batched_tokens, "Token budget per engine step")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app->add_option("--max-seqs", e.max_seqs, "Sequences running at once")
      ->capture_default_str()->check(CLI::PositiveNumber);
}

}  // namespace

int main(int argc, char** argv) {
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

  lagserve::cli::TokenizeArgs tok;
  CLI::App* t = app.add_subcommand("tokenize", "Print the token ids of TEXT as JSON");
  t->add_option("--model,-m", tok.model, "GGUF file, Hugging Face folder, or 'default'")
      ->capture_default_str();
  t->add_option("text", tok.text, "Text to tokenize")->required();
  t->add_flag("--add-bos", tok.add_bos, "Prepend BOS even if the model does not by default");

  CLI11_PARSE(app, argc, argv);
  gen.engine.seed = gen.seed.value_or(0);
  if (g->parsed()) {
    return gen.prompts_file.empty() ? lagserve::cli::run_generate(gen)
                                    : lagserve::cli::run_batch(gen);
  }
  return lagserve::cli::run_tokenize(tok);
}
