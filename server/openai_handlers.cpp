// The completion endpoints: a typed call to the core, then either one JSON
// response or a stream of server-sent events in OpenAI's chunk format.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <functional>

#include "server/http_util.h"
#include "server/serving.h"

namespace lagserve::server {
namespace {

using nlohmann::json;
using runtime::FinishReason;
using runtime::RequestOutput;

// How long a handler waits for an output before it checks on its client.
// Outputs wake it at once; this only bounds how often dozens of waiting
// handlers wake for nothing while they share the cores with the engine.
constexpr auto kPoll = std::chrono::milliseconds(200);
constexpr auto kHeartbeat = std::chrono::milliseconds(250);

const char* finish_name(FinishReason f) {
  switch (f) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Abort: return "abort";
    case FinishReason::None: break;
  }
  return nullptr;
}

json finish_json(FinishReason f) {
  const char* name = finish_name(f);
  return name ? json(name) : json(nullptr);
}

// vLLM's stop_reason: the stop string, the stop_token_ids id, or null (EOS,
// length, abort).
json stop_reason_json(const std::vector<int32_t>& stop_ids, const RequestOutput& out) {
  if (out.stop_token) {
    const bool listed =
        std::find(stop_ids.begin(), stop_ids.end(), *out.stop_token) != stop_ids.end();
    return listed ? json(*out.stop_token) : json(nullptr);
  }
  return out.stop_reason ? json(*out.stop_reason) : json(nullptr);
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(c);
  return b;
}

// What one call's responses share.
struct CallContext {
  const ServingCore& core;
  bool chat;
  int32_t logprobs;  // -1: none
  std::vector<int32_t> stop_token_ids;  // the request's (stop_reason reports them)
  std::string id;
  std::string model;
  int64_t created;
};

// Logprobs of the tokens of one output, appended to `acc` (the choice's
// logprobs object so far) in the endpoint's format.
void append_logprobs(const CallContext& c, const RequestOutput& out, json& acc,
                     size_t& text_offset) {
  for (const runtime::SampleResult& r : out.logprobs) {
    const std::string piece = c.core.token_piece(r.token);
    if (c.chat) {
      json top = json::array();
      for (const runtime::TokenLogprob& t : r.top) {
        const std::string p = c.core.token_piece(t.token);
        top.push_back({{"token", p}, {"logprob", t.logprob}, {"bytes", bytes_of(p)}});
      }
      acc["content"].push_back(
          {{"token", piece}, {"logprob", r.logprob}, {"bytes", bytes_of(piece)}, {"top_logprobs", top}});
    } else {
      json top = json::object();
      for (const runtime::TokenLogprob& t : r.top) top[c.core.token_piece(t.token)] = t.logprob;
      acc["tokens"].push_back(piece);
      acc["token_logprobs"].push_back(r.logprob);
      acc["top_logprobs"].push_back(top);
      acc["text_offset"].push_back(text_offset);
    }
    text_offset += piece.size();
  }
}

json empty_logprobs(bool chat) {
  if (chat) return {{"content", json::array()}};
  return {{"tokens", json::array()}, {"token_logprobs", json::array()},
          {"top_logprobs", json::array()}, {"text_offset", json::array()}};
}

json usage_json(int64_t prompt, int64_t completion) {
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json chunk_envelope(const CallContext& c) {
  return {{"id", c.id},
          {"object", c.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", c.created},
          {"model", c.model}};
}

std::string sse(const json& j) { return "data: " + dump_json(j) + "\n\n"; }

// Per-choice state while a call runs.
struct ChoiceState {
  std::string text;
  json logprobs;
  size_t text_offset = 0;
  FinishReason finish = FinishReason::None;
  json stop_reason;
  int32_t n_output = 0;
};

// A call that ran past --request-timeout (it has been cancelled).
ApiError timeout_error(const Generation& gen) {
  return {504, fmt::format("the request ran longer than the server's limit of {} s "
                           "(--request-timeout) and was cancelled", gen.timeout_s()),
          "timeout_error", "", ""};
}

// Runs a call to its end and returns the response body; nullopt when
// alive() said the client is gone (asked after every output and timeout).
std::optional<std::string> run_blocking(const CallContext& c, Generation& gen,
                                        const std::function<bool()>& alive) {
  std::vector<ChoiceState> choices(gen.n_choices());
  RequestOutput out;
  int32_t i = 0;
  for (Generation::Poll poll; (poll = gen.next_for(kPoll, &out, &i)) != Generation::Poll::Done;) {
    if (!alive()) return std::nullopt;
    if (poll == Generation::Poll::Timeout) continue;
    ChoiceState& ch = choices[i];
    if (!out.error.empty()) {
      return error_body({500, "generation failed: " + out.error, "server_error", "", ""});
    }
    ch.text += out.text;
    if (c.logprobs >= 0) {
      if (ch.logprobs.is_null()) ch.logprobs = empty_logprobs(c.chat);
      append_logprobs(c, out, ch.logprobs, ch.text_offset);
    }
    ch.n_output = out.n_output;
    if (out.finished()) {
      ch.finish = out.finish;
      ch.stop_reason = stop_reason_json(c.stop_token_ids, out);
    }
  }
  if (gen.timed_out()) return error_body(timeout_error(gen));
  json arr = json::array();
  int64_t completion = 0;
  for (size_t k = 0; k < choices.size(); ++k) {
    ChoiceState& ch = choices[k];
    completion += ch.n_output;
    json choice = {{"index", k},
                   {"logprobs", ch.logprobs},
                   {"finish_reason", finish_json(ch.finish)},
                   {"stop_reason", ch.stop_reason}};
    if (c.chat) {
      choice["message"] = {{"role", "assistant"}, {"content", ch.text}};
    } else {
      choice["text"] = ch.text;
    }
    arr.push_back(std::move(choice));
  }
  json body = chunk_envelope(c);
  body["object"] = c.chat ? "chat.completion" : "text_completion";
  body["choices"] = std::move(arr);
  body["usage"] = usage_json(gen.n_prompt_total(), completion);
  return dump_json(body);
}

// Streams one call; false when the client went away (the call is cancelled).
bool run_stream(const CallContext& c, bool include_usage, Generation& gen, httplib::DataSink& sink) {
  auto send = [&](const json& j) {
    const std::string event = sse(j);
    return sink.write(event.data(), event.size());
  };
  std::vector<int32_t> n_output(gen.n_choices(), 0);
  std::vector<size_t> text_offset(gen.n_choices(), 0);  // completions logprobs count on
  if (c.chat) {  // the role comes first, once per choice
    for (int32_t k = 0; k < gen.n_choices(); ++k) {
      json chunk = chunk_envelope(c);
      chunk["choices"] = json::array({{{"index", k},
                                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}});
      if (include_usage) chunk["usage"] = nullptr;
      if (!send(chunk)) return false;
    }
  }
  RequestOutput out;
  int32_t i = 0;
  for (;;) {
    const Generation::Poll poll = gen.next_for(kPoll, &out, &i);
    if (gen.timed_out()) {  // an error event, then the stream ends (cleanly, without [DONE])
      const std::string event = "data: " + error_body(timeout_error(gen)) + "\n\n";
      return sink.write(event.data(), event.size());
    }
    if (poll == Generation::Poll::Done) break;
    if (poll == Generation::Poll::Timeout) {
      if (!sink.is_writable()) return false;
      continue;
    }
    if (!out.error.empty()) {
      const std::string event =
          "data: " + error_body({500, "generation failed: " + out.error, "server_error", "", ""}) +
          "\n\n";
      sink.write(event.data(), event.size());
      return false;
    }
    n_output[i] = out.n_output;
    if (out.text.empty() && !out.finished() && c.logprobs < 0) continue;  // text held back
    json choice = {{"index", i}, {"finish_reason", finish_json(out.finish)}};
    if (out.finished()) {
      choice["stop_reason"] = stop_reason_json(c.stop_token_ids, out);
    }
    if (c.logprobs >= 0) {
      json lp = empty_logprobs(c.chat);
      append_logprobs(c, out, lp, text_offset[i]);
      choice["logprobs"] = std::move(lp);
    } else {
      choice["logprobs"] = nullptr;
    }
    if (c.chat) {
      choice["delta"] = out.text.empty() && out.finished() ? json::object()
                                                           : json{{"content", out.text}};
    } else {
      choice["text"] = out.text;
    }
    json chunk = chunk_envelope(c);
    chunk["choices"] = json::array({std::move(choice)});
    if (include_usage) chunk["usage"] = nullptr;
    if (!send(chunk)) return false;
  }
  if (include_usage) {
    int64_t completion = 0;
    for (int32_t n : n_output) completion += n;
    json chunk = chunk_envelope(c);
    chunk["choices"] = json::array();
    chunk["usage"] = usage_json(gen.n_prompt_total(), completion);
    if (!send(chunk)) return false;
  }
  static const std::string kDone = "data: [DONE]\n\n";
  return sink.write(kDone.data(), kDone.size());
}

}  // namespace

std::string dump_json(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ApiError api_error(const absl::Status& s) {
  const std::string message(s.message());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kAlreadyExists:
      return {400, message, "invalid_request_error", param_of(message), ""};
    case absl::StatusCode::kNotFound:
      return {404, message, "not_found_error", "", ""};
    case absl::StatusCode::kResourceExhausted:
      return {429, message, "rate_limit_error", "", "queue_full"};
    case absl::StatusCode::kUnavailable:
      return {503, message, "service_unavailable", "", ""};
    default:
      return {500, message, "server_error", "", ""};
  }
}

std::string error_body(const ApiError& e) {
  return dump_json({{"error",
                     {{"message", e.message},
                      {"type", e.type},
                      {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                      {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}});
}

void write_error(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(error_body(e), "application/json");
}

std::optional<ApiError> check_model(const ServingCore& core, const std::string& model) {
  if (model.empty() || model == core.model_name()) return std::nullopt;
  return ApiError{404, fmt::format("The model '{}' does not exist.", model),
                  "invalid_request_error", "model", "model_not_found"};
}

void handle_completion(ServingCore& core, const httplib::Request& req, httplib::Response& res,
                       bool chat) {
  std::variant<OpenAiCall, ApiError> parsed = parse_openai_request(req.body, chat);
  if (auto* e = std::get_if<ApiError>(&parsed)) return write_error(res, *e);
  OpenAiCall call = std::move(std::get<OpenAiCall>(parsed));
  if (auto e = check_model(core, call.model)) return write_error(res, *e);
  std::vector<int32_t> stop_ids = call.call.stop.stop_token_ids;
  absl::StatusOr<std::unique_ptr<Generation>> gen = core.generate(std::move(call.call));
  if (!gen.ok()) return write_error(res, api_error(gen.status()));
  auto ctx = std::make_shared<CallContext>(CallContext{
      core, chat, call.logprobs, std::move(stop_ids), (*gen)->id(), core.model_name(),
      static_cast<int64_t>(std::time(nullptr))});
  // The provider owns the Generation: when the response ends (or the client
  // goes away) it is destroyed, which cancels whatever still runs.
  std::shared_ptr<Generation> owned = std::move(*gen);
  if (!call.stream) {
    // NOTE: a plain response is also sent chunked, so that a client that
    // leaves is noticed: past kHeartbeat of waiting, a space (JSON allows
    // leading whitespace) is written every kHeartbeat, and a failed write
    // cancels the call. The status is 200 from then on, so an engine failure
    // or --request-timeout mid-call comes back as a 200 with an error body.
    res.set_chunked_content_provider("application/json", [ctx, owned](size_t, httplib::DataSink& sink) {
      auto last = std::chrono::steady_clock::now();
      auto alive = [&] {
        const auto now = std::chrono::steady_clock::now();
        if (now - last < kHeartbeat) return true;
        last = now;
        return sink.write(" ", 1);
      };
      std::optional<std::string> body = run_blocking(*ctx, *owned, alive);
      if (!body || !sink.write(body->data(), body->size())) {
        owned->cancel();
        return false;
      }
      sink.done();
      return true;
    });
    return;
  }
  const bool include_usage = call.include_usage;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [ctx, owned, include_usage](size_t, httplib::DataSink& sink) {
        if (!run_stream(*ctx, include_usage, *owned, sink)) {
          owned->cancel();
          return false;
        }
        sink.done();
        return true;
      });
}

}  // namespace lagserve::server
