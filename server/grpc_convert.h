// Translation between the lagserve.v1 protobuf messages and the typed structs
// of serving.h. No transport here: grpc_service.cpp is the gRPC edge.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "engine/runtime/request.h"
#include "server/serving.h"

namespace lagserve::v1 {
class GenerateRequest;
class GenerateResponse;
class TokenizeRequest;
}  // namespace lagserve::v1

namespace lagserve::server {

// The call a GenerateRequest asks for (id_prefix "grpc"). InvalidArgument when
// no prompt is set; value ranges are left to ServingCore::generate.
// request.model and request.request_id are not looked at.
absl::StatusOr<GenerateCall> generate_call_from_proto(const v1::GenerateRequest& request);

// The prompt of a TokenizeRequest; InvalidArgument when neither text nor chat is set.
absl::StatusOr<PromptInput> tokenize_prompt_from_proto(const v1::TokenizeRequest& request);

// Fills *response with one output of choice `choice` (everything but
// request_id and usage). Token texts go through core.token_piece, repaired to
// valid UTF-8 since proto3 strings must be.
void output_to_proto(const runtime::RequestOutput& out, int32_t choice, const ServingCore& core,
                     v1::GenerateResponse* response);

// s with every invalid UTF-8 subpart replaced by U+FFFD (s itself when valid).
std::string valid_utf8(std::string s);

}  // namespace lagserve::server
