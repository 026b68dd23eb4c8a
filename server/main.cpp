// The lagserve binary: `generate` and `tokenize` subcommands (the HTTP/gRPC
// server joins them later).
#include <CLI/CLI.hpp>

#include "server/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"lagserve: LLM inference with LagKV KV-cache compression"};
  app.require_subcommand(1);

  lagserve::cli::GenerateArgs gen;
  CLI::App* g = app.add_subcommand("generate", "Generate text from a prompt, streamed to stdout");
  g->add_option("--model,-m", gen.model, "GGUF file, Hugging Face folder, or 'default'")
      ->capture_default_str();
  g->add_option("--prompt,-p", gen.prompt, "Prompt text")->capture_default_str();
  g->add_flag("--chat", gen.chat, "Wrap the prompt in the model's chat template");
  g->add_option("--chat-template", gen.chat_template,
                "Chat template to use when the model's is not recognised")
      ->check(CLI::IsMember({"chatml", "llama3"}));
  g->add_option("--system", gen.system, "System message (with --chat)");
  g->add_option("--max-tokens,-n", gen.max_tokens, "Tokens to generate")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  g->add_option("--temperature,-t", gen.temperature, "Sampling temperature (0: greedy)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  g->add_option("--seed", gen.seed, "Sampling seed")->capture_default_str();
  g->add_option("--threads", gen.threads, "CPU threads (0: all cores)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  g->add_option("--kv-cache-mb", gen.kv_cache_mb, "KV cache size in MiB")
      ->capture_default_str()->check(CLI::PositiveNumber);
  g->add_flag("--ignore-eos", gen.ignore_eos, "Keep generating past end-of-sequence tokens");

  lagserve::cli::TokenizeArgs tok;
  CLI::App* t = app.add_subcommand("tokenize", "Print the token ids of TEXT as JSON");
  t->add_option("--model,-m", tok.model, "GGUF file, Hugging Face folder, or 'default'")
      ->capture_default_str();
  t->add_option("text", tok.text, "Text to tokenize")->required();
  t->add_flag("--add-bos", tok.add_bos, "Prepend BOS even if the model does not by default");

  CLI11_PARSE(app, argc, argv);
  if (g->parsed()) return lagserve::cli::run_generate(gen);
  return lagserve::cli::run_tokenize(tok);
}
