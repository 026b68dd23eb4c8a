// ServingCore: loading, prompt encoding, request building and admission
// checks, and the per-call Generation that feeds the metrics.
#include "server/serving.h"

#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <random>

#include "engine/common/status_macros.h"
#include "engine/model/model.h"
#include "server/server_metrics.h"

namespace lagserve::server {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The name /v1/models reports: the flag, else the file or folder name.
std::string default_model_name(const ServeOptions& o) {
  if (!o.served_model_name.empty()) return o.served_model_name;
  absl::StatusOr<std::string> path = model::resolve_model_path(o.engine.model);
  std::filesystem::path p(path.ok() ? *path : o.engine.model);
  if (p.filename().empty()) p = p.parent_path();  // a folder given with a trailing slash
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

}  // namespace

// --- Generation ---------------------------------------------------------------

Generation::~Generation() {
  if (n_open_ == 0) return;
  stream_->cancel();
  // Every request ends with an output (Abort here); reading them keeps the
  // counts and the metrics whole.
  runtime::RequestOutput out;
  int32_t choice = 0;
  while (next_for(std::chrono::milliseconds(1000), &out, &choice) != Poll::Done) {
  }
}

int32_t Generation::n_prompt_total() const {
  // Choices of one prompt share it: count each prompt once.
  int32_t total = 0;
  const int32_t n = static_cast<int32_t>(request_ids_.size() / std::max<size_t>(1, n_prompts_));
  for (size_t i = 0; i < prompt_lens_.size(); i += n) total += prompt_lens_[i];
  return total;
}

Generation::Poll Generation::next_for(std::chrono::milliseconds timeout,
                                      runtime::RequestOutput* out, int32_t* choice) {
  if (timeout_s_ > 0 && !timed_out_ && seconds_between(start_, Clock::now()) > timeout_s_) {
    timed_out_ = true;
    cancel();
  }
  const Poll poll = stream_->next_for(timeout, out);
  if (poll != Poll::Output) return poll;
  // Request ids are <call id>-<choice>.
  *choice = std::stoi(out->id.substr(out->id.rfind('-') + 1));
  observe(*out, *choice);
  return poll;
}

void Generation::cancel() { stream_->cancel(); }

void Generation::observe(const runtime::RequestOutput& out, int32_t choice) {
  const Clock::time_point now = Clock::now();
  if (!out.tokens.empty()) {
    if (!first_seen_[choice]) {
      first_seen_[choice] = true;
      metrics_->on_first_token(prompt_lens_[choice], seconds_between(start_, now),
                               out.queue_seconds);
    } else {
      metrics_->on_token_gap(seconds_between(last_token_[choice], now));
    }
    last_token_[choice] = now;
  }
  if (out.finished() && !finished_[choice]) {
    finished_[choice] = true;
    --n_open_;
    live_->fetch_sub(1);
    metrics_->on_finish(out.finish, out.n_output, seconds_between(start_, now));
  }
}

// --- ServingCore ----------------------------------------------------------------

ServingCore::ServingCore(ServeOptions options)
    : options_(std::move(options)),
      model_name_(default_model_name(options_)),
      metrics_(std::make_unique<ServerMetrics>(model_name_)) {
  std::random_device rd;
  id_state_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

ServingCore::~ServingCore() = default;

absl::Status ServingCore::load() {
  LAGSERVE_ASSIGN_OR_RETURN(parts_, cli::make_engine_parts(options_.engine));
  const int32_t context = parts_.model->config.max_positions;
  if (options_.max_model_len > context) {
    return absl::InvalidArgumentError(
        fmt::format("--max-model-len {} exceeds the model's context of {} tokens",
                    options_.max_model_len, context));
  }
  max_model_len_ = options_.max_model_len > 0 ? options_.max_model_len : context;
  default_policy_ = parts_.config.default_policy;
  std::optional<model::ChatFormat> format;
  if (options_.chat_template) {
    LAGSERVE_ASSIGN_OR_RETURN(format, model::parse_chat_format(*options_.chat_template));
  }
  absl::StatusOr<model::ChatTemplate> tmpl =
      model::detect_chat_template(parts_.model->chat_template, format);
  if (tmpl.ok()) {
    chat_template_ = *tmpl;
  } else {
    chat_template_error_ = tmpl.status();  // completions still work; chat calls get this error
  }
  auto engine = std::make_unique<runtime::Engine>(*parts_.backend, *parts_.model->tokenizer,
                                                  parts_.config);
  engine_ = std::make_unique<runtime::AsyncEngine>(std::move(engine));
  created_unix_ = static_cast<int64_t>(std::time(nullptr));
  state_ = ServerState::Ready;
  return absl::OkStatus();
}

int32_t ServingCore::vocab_size() const { return parts_.model->config.vocab_size; }

absl::StatusOr<std::vector<int32_t>> ServingCore::encode_chat(
    const std::vector<model::ChatMessage>& messages, std::optional<bool> add_special) const {
  if (!chat_template_) return chat_template_error_;
  if (messages.empty()) return absl::InvalidArgumentError("messages must not be empty");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(fmt::format(
          "messages[{}].role must be system, user or assistant, got '{}'", i, role));
    }
  }
  return chat_template_->encode(*parts_.model->tokenizer, messages, add_special);
}

absl::StatusOr<std::vector<int32_t>> ServingCore::tokenize(const PromptInput& prompt,
                                                           std::optional<bool> add_special) const {
  if (state() == ServerState::Loading) return absl::UnavailableError("the server is loading");
  const model::Tokenizer& tok = *parts_.model->tokenizer;
  switch (prompt.kind) {
    case PromptInput::Kind::Text:
      return tok.encode(prompt.text, add_special.value_or(tok.add_bos_default()));
    case PromptInput::Kind::Tokens:  // ids are checked by the engine at submit
      return prompt.tokens;
    case PromptInput::Kind::Chat:
      return encode_chat(prompt.messages, add_special);
  }
  return absl::InternalError("unknown prompt kind");
}

absl::StatusOr<std::string> ServingCore::detokenize(std::span<const int32_t> ids,
                                                    bool skip_special) const {
  if (state() == ServerState::Loading) return absl::UnavailableError("the server is loading");
  for (int32_t id : ids) {
    if (id < 0 || id >= parts_.model->tokenizer->vocab_size()) {
      return absl::InvalidArgumentError(
          fmt::format("token id {} is outside the vocabulary [0, {})", id,
                      parts_.model->tokenizer->vocab_size()));
    }
  }
  return parts_.model->tokenizer->decode(ids, skip_special);
}

std::string ServingCore::token_piece(int32_t id) const {
  return parts_.model->tokenizer->token_bytes(id);
}

absl::StatusOr<kv::LagPolicy> ServingCore::resolve_policy(const LagkvRequest& request) const {
  if (!request.enabled) return kv::LagPolicy{};
  kv::LagPolicyFields f = request.fields;
  if (default_policy_.enabled) {  // unset fields follow the server's policy
    const kv::LagPolicy& d = default_policy_;
    if (!f.sink) f.sink = d.sink;
    if (!f.lag) f.lag = d.lag;
    if (!f.keep && !f.ratio) f.ratio = static_cast<double>(d.keep) / d.lag;
    if (!f.score_v_weight) f.score_v_weight = d.score_v_weight;
    if (!f.skip_layers) f.skip_layers = d.skip_layers;
  }
  absl::StatusOr<kv::LagPolicy> policy = kv::LagPolicy::from_fields(f);
  if (!policy.ok()) {
    return absl::InvalidArgumentError("lagkv: " + std::string(policy.status().message()));
  }
  return policy;
}

std::string ServingCore::next_call_id(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(id_mu_);
  // splitmix64 over a random start: unique within the process, unguessable enough.
  uint64_t z = (id_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return fmt::format("{}-{:016x}", prefix, z ^ (z >> 31));
}

absl::StatusOr<std::unique_ptr<Generation>> ServingCore::generate(GenerateCall call) {
  if (state() == ServerState::Loading) return absl::UnavailableError("the server is loading");
  if (state() == ServerState::Draining) {
    return absl::UnavailableError("the server is shutting down");
  }
  if (call.n < 1 || call.n > options_.max_n) {
    return absl::InvalidArgumentError(fmt::format("n must be between 1 and {}", options_.max_n));
  }
  if (call.prompts.empty()) return absl::InvalidArgumentError("prompt must not be empty");
  const int64_t n_requests = static_cast<int64_t>(call.prompts.size()) * call.n;
  if (n_requests > options_.max_queued_requests) {
    return absl::InvalidArgumentError(
        fmt::format("prompt: {} prompts x n={} is more than the server queues at once ({})",
                    call.prompts.size(), call.n, options_.max_queued_requests));
  }
  const int64_t waiting = live_.load() - engine_->stats().n_running;
  if (waiting + n_requests > options_.max_queued_requests) {
    return absl::ResourceExhaustedError(fmt::format(
        "the server's queue is full ({} requests waiting); retry later", waiting));
  }
  std::optional<kv::LagPolicy> policy;
  if (call.lagkv) {
    LAGSERVE_ASSIGN_OR_RETURN(policy, resolve_policy(*call.lagkv));
  }

  auto gen = std::unique_ptr<Generation>(new Generation());
  gen->id_ = call.id.empty() ? next_call_id(call.id_prefix) : call.id;
  if (call.id.size() > 256) return absl::InvalidArgumentError("request_id: longer than 256 bytes");
  std::vector<runtime::Request> requests;
  for (const PromptInput& prompt : call.prompts) {
    LAGSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, tokenize(prompt));
    const int32_t n_prompt = static_cast<int32_t>(tokens.size());
    if (n_prompt == 0) return absl::InvalidArgumentError("prompt must not be empty");
    if (n_prompt >= max_model_len_) {
      return absl::InvalidArgumentError(fmt::format(
          "prompt: this model's maximum context length is {} tokens, and the prompt has {}",
          max_model_len_, n_prompt));
    }
    const int32_t max_tokens = call.max_tokens.value_or(
        prompt.kind == PromptInput::Kind::Chat ? max_model_len_ - n_prompt : 16);
    if (max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
    if (static_cast<int64_t>(n_prompt) + max_tokens > max_model_len_) {
      return absl::InvalidArgumentError(fmt::format(
          "max_tokens: this model's maximum context length is {} tokens; the prompt has {} and "
          "max_tokens asks for {} more",
          max_model_len_, n_prompt, max_tokens));
    }
    for (int32_t j = 0; j < call.n; ++j) {
      runtime::Request r;
      r.id = fmt::format("{}-{}", gen->id_, requests.size());
      r.prompt = tokens;
      r.sampling = call.sampling;
      if (r.sampling.seed) *r.sampling.seed += static_cast<uint64_t>(j);
      r.stop = call.stop;
      r.stop.max_tokens = max_tokens;
      r.lagkv = policy;
      gen->request_ids_.push_back(r.id);
      gen->prompt_lens_.push_back(n_prompt);
      requests.push_back(std::move(r));
    }
  }
  gen->n_prompts_ = call.prompts.size();
  gen->start_ = Clock::now();
  gen->timeout_s_ = options_.request_timeout_s;
  LAGSERVE_ASSIGN_OR_RETURN(gen->stream_, engine_->submit_group(std::move(requests)));
  const size_t n = gen->request_ids_.size();
  gen->metrics_ = metrics_.get();
  gen->live_ = &live_;
  gen->last_token_.assign(n, gen->start_);
  gen->first_seen_.assign(n, false);
  gen->finished_.assign(n, false);
  gen->n_open_ = static_cast<int32_t>(n);
  live_.fetch_add(static_cast<int64_t>(n));
  return gen;
}

std::string ServingCore::metrics_text() {
  if (engine_) metrics_->update(engine_->stats());
  return metrics_->render();
}

}  // namespace lagserve::server
