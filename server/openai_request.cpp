// parse_openai_request: field by field, with the type and range of each
// checked here and the sampling ranges checked by the engine's validators.
#include "server/openai_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace lagserve::server {
namespace {

using nlohmann::json;

// Thrown inside this file only; parse_openai_request turns it into ApiError.
struct FieldError {
  std::string param;
  std::string message;
};

[[noreturn]] void fail(const std::string& param, const std::string& message) {
  throw FieldError{param, message};
}

const json* find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

// Runs fn; a FieldError inside names its field as <prefix>.<field>.
template <typename Fn>
auto within(const std::string& prefix, Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (FieldError& e) {
    if (e.param != prefix && e.param.rfind(prefix, 0) != 0) {
      e.message = prefix + "." + e.message;
      e.param = prefix + "." + e.param;
    }
    throw;
  }
}

std::optional<double> read_double(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) fail(key, fmt::format("{} must be a number", key));
  const double x = v->get<double>();
  if (!std::isfinite(x) || std::abs(x) > 1e30) fail(key, fmt::format("{} is out of range", key));
  return x;
}

std::optional<int64_t> read_int(const json& obj, const char* key, int64_t lo, int64_t hi) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) fail(key, fmt::format("{} must be an integer", key));
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    fail(key, fmt::format("{} must be between {} and {}", key, lo, hi));
  }
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi) fail(key, fmt::format("{} must be between {} and {}, got {}", key, lo, hi, x));
  return x;
}

std::optional<float> read_float(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) fail(key, fmt::format("{} must be a number", key));
  const double x = v->get<double>();
  if (!std::isfinite(x) || std::abs(x) > 1e30) fail(key, fmt::format("{} is out of range", key));
  return static_cast<float>(x);
}

std::optional<bool> read_bool(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) fail(key, fmt::format("{} must be a boolean", key));
  return v->get<bool>();
}

std::optional<std::string> read_string(const json& obj, const char* key) {
  const json* v = find(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) fail(key, fmt::format("{} must be a string", key));
  return v->get<std::string>();
}

void check_keys(const json& obj, const char* where, const std::set<std::string>& allowed) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (!allowed.count(it.key())) fail(where, fmt::format("{}: unknown field '{}'", where, it.key()));
  }
}

std::vector<int32_t> read_token_list(const json& arr, const char* param) {
  std::vector<int32_t> ids;
  for (const json& t : arr) {
    if (!t.is_number_integer()) fail(param, fmt::format("{} must hold integer token ids", param));
    const int64_t id = t.is_number_unsigned() && t.get<uint64_t>() > INT32_MAX
                           ? -1
                           : t.get<int64_t>();
    if (id < 0 || id > INT32_MAX) fail(param, fmt::format("{}: token id {} is out of range", param, t.dump()));
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// "prompt": a string, a list of strings, a list of token ids, or a list of lists of ids.
std::vector<PromptInput> read_prompts(const json& body) {
  const json* p = find(body, "prompt");
  if (!p) fail("prompt", "prompt is required");
  auto text = [](std::string s) {
    if (s.empty()) fail("prompt", "prompt must not be empty");
    PromptInput in;
    in.kind = PromptInput::Kind::Text;
    in.text = std::move(s);
    return in;
  };
  auto tokens = [](const json& arr) {
    PromptInput in;
    in.kind = PromptInput::Kind::Tokens;
    in.tokens = read_token_list(arr, "prompt");
    if (in.tokens.empty()) fail("prompt", "prompt must not be empty");
    return in;
  };
  if (p->is_string()) return {text(p->get<std::string>())};
  if (!p->is_array() || p->empty()) {
    fail("prompt", "prompt must be a string, a list of strings, or a list of token ids");
  }
  if ((*p)[0].is_number()) return {tokens(*p)};
  std::vector<PromptInput> prompts;
  for (const json& item : *p) {
    if (item.is_string()) {
      prompts.push_back(text(item.get<std::string>()));
    } else if (item.is_array()) {
      prompts.push_back(tokens(item));
    } else {
      fail("prompt", "prompt must be a string, a list of strings, or a list of token ids");
    }
  }
  return prompts;
}

std::string message_text(const json& content, size_t i) {
  const std::string param = fmt::format("messages[{}].content", i);
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) fail(param, param + " must be a string or a list of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object()) fail(param, param + " must hold objects");
    const json* type = find(part, "type");
    if (!type || !type->is_string() || *type != "text") {
      fail(param, fmt::format("{}: only text parts are supported, got type {}", param,
                              type ? type->dump() : "none"));
    }
    check_keys(part, param.c_str(), {"type", "text"});
    const json* t = find(part, "text");
    if (t && !t->is_string()) fail(param, param + ": a text part's text must be a string");
    if (t) text += t->get<std::string>();
  }
  return text;
}

std::vector<PromptInput> read_messages(const json& body) {
  const json* m = find(body, "messages");
  if (!m) fail("messages", "messages is required");
  if (!m->is_array()) fail("messages", "messages must be a list");
  if (m->empty()) fail("messages", "messages must not be empty");
  PromptInput in;
  in.kind = PromptInput::Kind::Chat;
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!msg.is_object()) fail(param, param + " must be an object");
    check_keys(msg, param.c_str(), {"role", "content", "name"});
    within(param, [&] { read_string(msg, "name"); });  // accepted; its type is checked
    const json* role = find(msg, "role");
    if (!role || !role->is_string()) fail(param + ".role", param + ".role must be a string");
    std::string r = role->get<std::string>();
    if (r == "developer") r = "system";
    if (r != "system" && r != "user" && r != "assistant") {
      fail(param + ".role",
           fmt::format("{}.role must be system, developer, user or assistant, got '{}'", param, r));
    }
    if (!msg.contains("content")) fail(param + ".content", param + ".content is required");
    in.messages.push_back({r, message_text(msg["content"], i)});
  }
  return {in};
}

std::optional<LagkvRequest> read_lagkv(const json& body) {
  const json* v = find(body, "lagkv");
  if (!v) return std::nullopt;
  LagkvRequest req;
  if (v->is_boolean()) {
    req.enabled = v->get<bool>();
    return req;
  }
  if (!v->is_object()) fail("lagkv", "lagkv must be false, true, or an object {sink, lag, ratio}");
  check_keys(*v, "lagkv", {"sink", "lag", "ratio", "keep", "score_v_weight"});
  within("lagkv", [&] {  // errors name lagkv.<key>
    if (auto x = read_int(*v, "sink", 0, 1 << 20)) req.fields.sink = static_cast<int32_t>(*x);
    if (auto x = read_int(*v, "lag", 1, 1 << 20)) req.fields.lag = static_cast<int32_t>(*x);
    if (auto x = read_int(*v, "keep", 1, 1 << 20)) req.fields.keep = static_cast<int32_t>(*x);
    if (auto x = read_double(*v, "ratio")) req.fields.ratio = *x;
    if (auto x = read_float(*v, "score_v_weight")) req.fields.score_v_weight = *x;
  });
  return req;
}

void read_stop(const json& body, runtime::StopParams& stop) {
  if (const json* s = find(body, "stop")) {
    if (s->is_string()) {
      stop.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const json& x : *s) {
        if (!x.is_string()) fail("stop", "stop must be a string or a list of strings");
        stop.stop.push_back(x.get<std::string>());
      }
    } else {
      fail("stop", "stop must be a string or a list of strings");
    }
    if (stop.stop.size() > 64) fail("stop", "stop: at most 64 stop strings");
  }
  if (const json* ids = find(body, "stop_token_ids")) {
    if (!ids->is_array()) fail("stop_token_ids", "stop_token_ids must be a list of token ids");
    stop.stop_token_ids = read_token_list(*ids, "stop_token_ids");
  }
  if (auto x = read_bool(body, "ignore_eos")) stop.ignore_eos = *x;
  if (auto x = read_int(body, "min_tokens", 0, INT32_MAX)) stop.min_tokens = static_cast<int32_t>(*x);
  if (auto x = read_bool(body, "skip_special_tokens")) stop.skip_special_tokens = *x;
  if (auto x = read_bool(body, "include_stop_str_in_output")) stop.include_stop_str_in_output = *x;
}

void read_sampling(const json& body, runtime::SamplingParams& s) {
  if (auto x = read_float(body, "temperature")) s.temperature = *x;
  if (auto x = read_float(body, "top_p")) s.top_p = *x;
  if (auto x = read_int(body, "top_k", -1, INT32_MAX)) s.top_k = static_cast<int32_t>(*x);
  if (auto x = read_float(body, "min_p")) s.min_p = *x;
  if (auto x = read_float(body, "presence_penalty")) s.presence_penalty = *x;
  if (auto x = read_float(body, "frequency_penalty")) s.frequency_penalty = *x;
  if (auto x = read_float(body, "repetition_penalty")) s.repetition_penalty = *x;
  if (auto x = read_int(body, "seed", std::numeric_limits<int64_t>::min(),
                        std::numeric_limits<int64_t>::max())) {
    s.seed = static_cast<uint64_t>(*x);
  }
  if (const json* b = find(body, "logit_bias")) {
    if (!b->is_object()) fail("logit_bias", "logit_bias must be an object of token id -> bias");
    for (auto it = b->begin(); it != b->end(); ++it) {
      int64_t id = -1;  // the key must be plain digits: no sign, no spaces
      const std::string& key = it.key();
      if (!key.empty() && key.size() <= 10 &&
          std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
        id = std::stoll(key);
      }
      if (id > INT32_MAX) id = -1;
      if (id < 0) fail("logit_bias", fmt::format("logit_bias: '{}' is not a token id", it.key()));
      if (!it.value().is_number()) fail("logit_bias", "logit_bias values must be numbers");
      s.logit_bias.emplace_back(static_cast<int32_t>(id), it.value().get<float>());
    }
  }
}

OpenAiCall parse_body(const json& body, bool chat) {
  if (!body.is_object()) fail("", "the request body must be a JSON object");
  OpenAiCall c;
  c.chat = chat;
  c.model = read_string(body, "model").value_or("");
  c.stream = read_bool(body, "stream").value_or(false);
  if (const json* so = find(body, "stream_options")) {
    if (!so->is_object()) fail("stream_options", "stream_options must be an object");
    check_keys(*so, "stream_options", {"include_usage", "continuous_usage_stats"});
    c.include_usage =
        within("stream_options", [&] { return read_bool(*so, "include_usage").value_or(false); });
  }
  read_string(body, "user");  // accepted for compatibility; only its type is checked
  c.call.id = read_string(body, "request_id").value_or("");  // vLLM's extra
  GenerateCall& call = c.call;
  call.id_prefix = chat ? "chatcmpl" : "cmpl";
  call.prompts = chat ? read_messages(body) : read_prompts(body);
  call.n = static_cast<int32_t>(read_int(body, "n", 1, 1 << 20).value_or(1));
  if (auto x = read_int(body, "best_of", 1, 1 << 20); x && *x != call.n) {
    fail("best_of", "best_of other than n is not supported");
  }
  std::optional<int64_t> max_tokens = read_int(body, "max_tokens", 1, INT32_MAX);
  if (auto x = read_int(body, "max_completion_tokens", 1, INT32_MAX)) max_tokens = x;
  if (max_tokens) call.max_tokens = static_cast<int32_t>(*max_tokens);
  read_sampling(body, call.sampling);
  read_stop(body, call.stop);
  call.lagkv = read_lagkv(body);
  if (chat) {
    if (read_bool(body, "logprobs").value_or(false)) {
      c.logprobs = static_cast<int32_t>(read_int(body, "top_logprobs", 0, runtime::kMaxLogprobs).value_or(0));
    } else if (find(body, "top_logprobs")) {
      fail("top_logprobs", "top_logprobs needs logprobs: true");
    }
    if (const json* tools = find(body, "tools"); tools && !(tools->is_array() && tools->empty())) {
      fail("tools", "tools are not supported by this server");
    }
    if (const json* rf = find(body, "response_format")) {
      const json* type = rf->is_object() ? find(*rf, "type") : nullptr;
      if (!type || !type->is_string() || *type != "text") {
        fail("response_format", "only response_format {\"type\": \"text\"} is supported");
      }
    }
  } else {
    if (auto x = read_int(body, "logprobs", 0, runtime::kMaxLogprobs)) c.logprobs = static_cast<int32_t>(*x);
    if (read_bool(body, "echo").value_or(false)) fail("echo", "echo is not supported");
    if (read_string(body, "suffix")) fail("suffix", "suffix is not supported");
  }
  call.sampling.logprobs = c.logprobs;
  return c;
}

}  // namespace

std::variant<OpenAiCall, ApiError> parse_openai_request(std::string_view body, bool chat) {
  json doc;
  try {
    doc = json::parse(body);
  } catch (const json::exception& e) {  // syntax, or a number beyond double's range
    return ApiError{400, fmt::format("the request body is not valid JSON: {}", e.what()),
                    "invalid_request_error", "", ""};
  }
  try {
    return parse_body(doc, chat);
  } catch (const FieldError& e) {
    return ApiError{400, e.message, "invalid_request_error", e.param, ""};
  } catch (const json::exception& e) {  // a value of the wrong type deeper down
    return ApiError{400, fmt::format("invalid request: {}", e.what()), "invalid_request_error",
                    "", ""};
  }
}

std::string param_of(std::string_view message) {
  static const std::set<std::string, std::less<>> kFields = {
      "prompt", "messages", "max_tokens", "min_tokens", "temperature", "top_p", "top_k",
      "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias",
      "logprobs", "top_logprobs", "stop", "stop_token_ids", "seed", "n", "lagkv", "model"};
  size_t end = 0;
  while (end < message.size() && (std::isalnum(static_cast<unsigned char>(message[end])) ||
                                   message[end] == '_')) {
    ++end;
  }
  const std::string_view word = message.substr(0, end);
  return kFields.count(word) ? std::string(word) : std::string();
}

}  // namespace lagserve::server
