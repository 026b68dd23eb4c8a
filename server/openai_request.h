// The edge of the OpenAI-compatible API: a request body (JSON) becomes a
// typed OpenAiCall, or an ApiError that names the field. Nothing past this
// file sees JSON.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "server/serving.h"

namespace lagserve::server {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, when there is one
  std::string code;
};

struct OpenAiCall {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string model;           // as given; empty when absent
  // Completions: top logprobs per token (-1: none). Chat: with logprobs=true,
  // top_logprobs (0 when absent); -1 when logprobs is false.
  int32_t logprobs = -1;
  GenerateCall call;
};

// Parses a /v1/completions (chat = false) or /v1/chat/completions body.
// Unknown top-level fields are ignored, as vLLM does; unknown keys inside
// objects we define (lagkv, stream_options, a message) are errors.
std::variant<OpenAiCall, ApiError> parse_openai_request(std::string_view body, bool chat);

// The field a validation message is about: its first word when that is a
// request field ("max_tokens must be ..." -> "max_tokens"), else "".
std::string param_of(std::string_view message);

}  // namespace lagserve::server
