// Subcommands of the lagserve binary.
#pragma once

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "engine/runtime/request.h"
#include "server/engine_setup.h"
#include "server/serving.h"

namespace lagserve::cli {

struct GenerateArgs {
  EngineArgs engine;
  std::string prompt = "Write a haiku about the sea.";
  bool chat = false;
  std::optional<std::string> chat_template;  // "chatml" | "llama3"
  std::string system;
  int max_tokens = 128;
  float temperature = 0.f;
  float top_p = 1.f;
  int top_k = 0;
  float min_p = 0.f;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  std::string prompts_file;     // batch mode: JSONL in
  std::string output_file;      // batch mode: JSONL out ("" = stdout)
  std::string trace_evictions;  // JSONL of kept positions per compaction
};

struct ServeArgs {
  server::ServeOptions core;           // model, engine, limits (ServingCore's own options)
  std::string host = "127.0.0.1";
  int port = 8000;
  int grpc_port = 50051;               // -1: no gRPC server (the default without gRPC)
  std::string api_key;                 // "" : none
  std::string api_key_file;
  double drain_timeout_s = 30;
  int max_body_mb = 8;
  std::string log_level = "info";
};

struct EvalArgs {
  EngineArgs engine;                     // every field but the model
  std::vector<std::string> models = {"default"};
  std::vector<std::string> tasks;        // passkey, multikey, facts
  std::vector<int32_t> lengths;          // prompt tokens per task sample
  std::string data;                      // a JSONL of prompt/answer pairs, in place of tasks
  std::vector<std::string> policies = {"off", "2x", "4x", "8x"};
  int samples = 20;                      // per task and length
  uint64_t seed = 0;
  std::string csv = "eval.csv";
  std::string plot = "eval.png";         // "" : none
};

struct TokenizeArgs {
  std::string model = "default";
  std::string text;
  bool add_bos = false;
};

// Each returns the process exit code; errors go to stderr as one line.
int run_generate(const GenerateArgs& args);
int run_batch(const GenerateArgs& args);
int run_tokenize(const TokenizeArgs& args);
// Accuracy of the models on the tasks under each policy; CSV and PNG (cli_eval.cpp).
int run_eval(const EvalArgs& args);
// Serves HTTP and gRPC until SIGTERM/SIGINT, then drains; 0 after a clean drain.
int run_serve(const ServeArgs& args);

// "lagserve: error: <message>" on stderr; returns 1.
int fail(const absl::Status& status);

// A request with the sampling and stop settings of the flags (batch lines
// override them field by field). --seed seeds the engine, not each request.
runtime::Request request_from_flags(const GenerateArgs& args);

// With --trace-evictions, opens the file and points config.on_eviction at it
// (one JSON line per compaction). `out` must outlive the engine.
absl::Status open_eviction_trace(const std::string& path, std::ofstream& out,
                                 runtime::EngineConfig& config);

// Token ids of a prompt: plain text, or chat messages through the model's
// template (override_format when the template is not recognised).
absl::StatusOr<std::vector<int32_t>> encode_prompt(
    const model::Model& model, const std::string& text,
    const std::vector<model::ChatMessage>* messages, const std::optional<std::string>& template_name);

}  // namespace lagserve::cli
