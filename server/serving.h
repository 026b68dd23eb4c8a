// ServingCore: what the HTTP and gRPC front ends share. It owns the model,
// the backend and the engine thread, turns typed requests (no JSON, no
// protobuf) into engine requests, enforces the queue limit and the server
// state (loading, ready, draining), and keeps the metrics.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv/lag_policy.h"
#include "engine/model/chat_template.h"
#include "engine/runtime/async_engine.h"
#include "engine/runtime/request.h"
#include "server/engine_setup.h"

namespace lagserve::model {
struct Model;
}  // namespace lagserve::model

namespace lagserve::server {

class ServerMetrics;

enum class ServerState { Loading, Ready, Draining };

struct ServeOptions {
  cli::EngineArgs engine;
  std::string served_model_name;             // "" => the model file or folder name
  int32_t max_model_len = 0;                 // 0 => the model's context
  int32_t max_queued_requests = 256;         // requests waiting for the engine; more => 429
  int32_t max_n = 16;                        // most choices per call
  double request_timeout_s = 600;            // a call running longer is cancelled; 0 => no limit
  std::optional<std::string> chat_template;  // "chatml" | "llama3" when not recognised
};

// A prompt as a client gave it: exactly one of the three forms.
struct PromptInput {
  enum class Kind { Text, Tokens, Chat };
  Kind kind = Kind::Text;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<model::ChatMessage> messages;
};

// The per-request policy a client asked for: off, or an enabled policy
// whose unset fields take the server's default policy (or the LagPolicy
// defaults when the server's is off).
struct LagkvRequest {
  bool enabled = true;
  kv::LagPolicyFields fields;
};

// One API call, typed. It becomes prompts.size() * n engine requests,
// choice index = prompt_index * n + j.
struct GenerateCall {
  std::vector<PromptInput> prompts;  // one, or several (/v1/completions with a list)
  int32_t n = 1;
  std::optional<int32_t> max_tokens;  // unset: 16 for text/tokens, the rest of the context for chat
  runtime::SamplingParams sampling;   // sampling.seed: choice j uses seed + j
  runtime::StopParams stop;           // max_tokens is filled from the field above
  std::optional<LagkvRequest> lagkv;  // unset: the server's default policy
  std::string id_prefix = "cmpl";     // the call's id is <prefix>-<random hex>
  std::string id;                     // the client's id for the call, if it gave one
};

// One running call: its requests' outputs, and the metrics they feed.
// Destroying it before every choice has finished cancels the rest.
class Generation {
 public:
  ~Generation();
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  const std::string& id() const { return id_; }
  int32_t n_choices() const { return static_cast<int32_t>(request_ids_.size()); }
  // Prompt tokens of a choice's prompt, and the sum over the call's prompts.
  int32_t n_prompt(int32_t choice) const { return prompt_lens_[choice]; }
  int32_t n_prompt_total() const;

  using Poll = runtime::RequestStream::Poll;
  // Next output of any choice (*choice says which), or Timeout, or Done when
  // every choice has finished.
  Poll next_for(std::chrono::milliseconds timeout, runtime::RequestOutput* out, int32_t* choice);
  // Aborts the choices still running (each ends with FinishReason::Abort).
  void cancel();
  // True once the call ran past --request-timeout: next_for cancelled it, and
  // its remaining choices end with FinishReason::Abort.
  bool timed_out() const { return timed_out_; }
  double timeout_s() const { return timeout_s_; }

 private:
  friend class ServingCore;
  Generation() = default;
  void observe(const runtime::RequestOutput& out, int32_t choice);

  std::string id_;
  std::vector<std::string> request_ids_;
  std::vector<int32_t> prompt_lens_;  // per choice
  size_t n_prompts_ = 1;
  std::shared_ptr<runtime::RequestStream> stream_;
  ServerMetrics* metrics_ = nullptr;
  std::atomic<int64_t>* live_ = nullptr;
  std::chrono::steady_clock::time_point start_;
  double timeout_s_ = 0;  // 0: none
  bool timed_out_ = false;
  std::vector<std::chrono::steady_clock::time_point> last_token_;  // per choice
  std::vector<bool> first_seen_, finished_;
  int32_t n_open_ = 0;
};

class ServingCore {
 public:
  explicit ServingCore(ServeOptions options);
  ~ServingCore();

  // Loads the model and starts the engine thread; the state goes from
  // Loading to Ready. Errors name the file and what is wrong.
  absl::Status load();
  ServerState state() const { return state_.load(); }
  // No new calls from now on (Unavailable); running ones go on.
  void start_draining() { state_ = ServerState::Draining; }
  // Aborts every running call (the end of a drain).
  void cancel_all() {
    if (engine_) engine_->cancel_all();
  }
  // Calls accepted and not yet finished.
  int64_t n_live() const { return live_.load(); }

  // Valid once loaded.
  const std::string& model_name() const { return model_name_; }
  int32_t max_model_len() const { return max_model_len_; }
  const kv::LagPolicy& default_policy() const { return default_policy_; }
  int64_t created_unix() const { return created_unix_; }
  int32_t vocab_size() const;

  // Token ids of a prompt. add_special unset: the model's default (BOS);
  // chat prompts are rendered with the model's template.
  absl::StatusOr<std::vector<int32_t>> tokenize(const PromptInput& prompt,
                                                std::optional<bool> add_special = {}) const;
  // Text of token ids; InvalidArgument naming an id outside the vocabulary.
  absl::StatusOr<std::string> detokenize(std::span<const int32_t> ids,
                                         bool skip_special = false) const;
  // A token's text for logprobs (its bytes; may be part of a UTF-8 character).
  std::string token_piece(int32_t id) const;

  // Starts a call. Errors: Unavailable (loading or draining),
  // ResourceExhausted (the queue is full), InvalidArgument naming the field
  // (prompt too long for the context, max_tokens that cannot fit, bad
  // sampling values, a bad lagkv policy, ...).
  absl::StatusOr<std::unique_ptr<Generation>> generate(GenerateCall call);

  // Prometheus text, with the gauges refreshed from the engine.
  std::string metrics_text();

 private:
  absl::StatusOr<kv::LagPolicy> resolve_policy(const LagkvRequest& request) const;
  absl::StatusOr<std::vector<int32_t>> encode_chat(const std::vector<model::ChatMessage>& messages,
                                                   std::optional<bool> add_special) const;
  std::string next_call_id(const std::string& prefix);

  ServeOptions options_;
  std::atomic<ServerState> state_{ServerState::Loading};
  std::atomic<int64_t> live_{0};
  std::string model_name_;  // before metrics_, whose labels carry it
  std::unique_ptr<ServerMetrics> metrics_;
  cli::EngineParts parts_;
  std::unique_ptr<runtime::AsyncEngine> engine_;
  std::optional<model::ChatTemplate> chat_template_;
  absl::Status chat_template_error_;
  int32_t max_model_len_ = 0;
  kv::LagPolicy default_policy_;
  int64_t created_unix_ = 0;
  std::mutex id_mu_;
  uint64_t id_state_ = 0;
};

}  // namespace lagserve::server
