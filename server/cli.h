// Subcommands of the lagserve binary.
#pragma once

#include <optional>
#include <string>

namespace lagserve::cli {

struct GenerateArgs {
  std::string model = "default";
  std::string prompt = "Write a haiku about the sea.";
  bool chat = false;
  std::optional<std::string> chat_template;  // "chatml" | "llama3"
  std::string system;
  int max_tokens = 128;
  float temperature = 0.f;
  uint64_t seed = 0;
  int threads = 0;  // 0: all cores
  int kv_cache_mb = 1024;
  bool ignore_eos = false;
};

struct TokenizeArgs {
  std::string model = "default";
  std::string text;
  bool add_bos = false;
};

// Each returns the process exit code; errors go to stderr as one line.
int run_generate(const GenerateArgs& args);
int run_tokenize(const TokenizeArgs& args);

}  // namespace lagserve::cli
