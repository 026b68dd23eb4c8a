// Helpers the HTTP handlers share: OpenAI error bodies, status mapping, JSON
// output that never throws on invalid UTF-8, and the completion handler.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "server/openai_request.h"

namespace lagserve::server {

class ServingCore;

// JSON text; invalid UTF-8 (a token that is part of a character) becomes U+FFFD.
std::string dump_json(const nlohmann::json& j);
// The error for a status from the core: InvalidArgument 400, NotFound 404,
// ResourceExhausted 429, Unavailable 503, others 500.
ApiError api_error(const absl::Status& status);
// {"error": {message, type, param, code}} as JSON text.
std::string error_body(const ApiError& error);
void write_error(httplib::Response& res, const ApiError& error);
// 404 unless `model` is empty or the served model's name.
std::optional<ApiError> check_model(const ServingCore& core, const std::string& model);

// POST /v1/completions (chat = false) and /v1/chat/completions.
void handle_completion(ServingCore& core, const httplib::Request& req, httplib::Response& res,
                       bool chat);

}  // namespace lagserve::server
