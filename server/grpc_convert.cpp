// Translation between the lagserve.v1 protobuf messages and the typed structs
// of serving.h (see grpc_convert.h).
#include "server/grpc_convert.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "engine/model/unicode_bytes.h"
#include "lagserve/v1/lagserve.pb.h"

namespace lagserve::server {

namespace {

// proto uint32 counts into the int32 fields of the structs. Values past
// INT32_MAX saturate, so that the core rejects them as too large rather than
// seeing them wrap to negative numbers.
int32_t saturate_int32(uint64_t v) {
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
  return static_cast<int32_t>(std::min(v, kMax));
}

std::vector<model::ChatMessage> chat_from_proto(const v1::ChatMessages& chat) {
  std::vector<model::ChatMessage> messages;
  messages.reserve(chat.messages_size());
  for (const v1::ChatMessage& m : chat.messages()) messages.push_back({m.role(), m.content()});
  return messages;
}

runtime::SamplingParams sampling_from_proto(const v1::GenerateRequest& r) {
  runtime::SamplingParams s;  // its defaults are the API's (temperature 1.0, ...)
  if (r.has_temperature()) s.temperature = r.temperature();
  if (r.has_top_p()) s.top_p = r.top_p();
  if (r.has_top_k()) s.top_k = r.top_k();
  if (r.has_min_p()) s.min_p = r.min_p();
  if (r.has_presence_penalty()) s.presence_penalty = r.presence_penalty();
  if (r.has_frequency_penalty()) s.frequency_penalty = r.frequency_penalty();
  if (r.has_repetition_penalty()) s.repetition_penalty = r.repetition_penalty();
  s.logit_bias.assign(r.logit_bias().begin(), r.logit_bias().end());
  std::sort(s.logit_bias.begin(), s.logit_bias.end());  // protobuf maps have no order
  if (r.has_seed()) s.seed = r.seed();
  if (r.has_logprobs()) s.logprobs = saturate_int32(r.logprobs());
  return s;
}

runtime::StopParams stop_from_proto(const v1::GenerateRequest& r) {
  runtime::StopParams s;
  s.stop.assign(r.stop().begin(), r.stop().end());
  s.stop_token_ids.assign(r.stop_token_ids().begin(), r.stop_token_ids().end());
  s.ignore_eos = r.ignore_eos();
  s.min_tokens = saturate_int32(r.min_tokens());
  s.skip_special_tokens = r.has_skip_special_tokens() ? r.skip_special_tokens() : true;
  return s;  // max_tokens: the core fills it from GenerateCall::max_tokens
}

v1::FinishReason finish_to_proto(runtime::FinishReason finish) {
  switch (finish) {
    case runtime::FinishReason::None:
      return v1::FINISH_REASON_UNSPECIFIED;
    case runtime::FinishReason::Stop:
      return v1::FINISH_REASON_STOP;
    case runtime::FinishReason::Length:
      return v1::FINISH_REASON_LENGTH;
    case runtime::FinishReason::Abort:
      return v1::FINISH_REASON_ABORT;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void token_logprob_to_proto(int32_t token, float logprob, const ServingCore& core,
                            v1::TokenLogprob* out) {
  out->set_token_id(token);
  out->set_token(valid_utf8(core.token_piece(token)));
  out->set_logprob(logprob);
}

}  // namespace

std::string valid_utf8(std::string s) {
  if (model::utf8_is_valid(s)) return s;
  return model::utf8_repair(s);
}

absl::StatusOr<GenerateCall> generate_call_from_proto(const v1::GenerateRequest& request) {
  PromptInput prompt;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      prompt.kind = PromptInput::Kind::Text;
      prompt.text = request.text();
      break;
    case v1::GenerateRequest::kTokenIds:
      prompt.kind = PromptInput::Kind::Tokens;
      prompt.tokens.assign(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    case v1::GenerateRequest::kChat:
      prompt.kind = PromptInput::Kind::Chat;
      prompt.messages = chat_from_proto(request.chat());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      return absl::InvalidArgumentError("prompt is required");
  }

  GenerateCall call;
  call.prompts.push_back(std::move(prompt));
  call.n = request.n() == 0 ? 1 : saturate_int32(request.n());
  if (request.has_max_tokens()) call.max_tokens = saturate_int32(request.max_tokens());
  call.sampling = sampling_from_proto(request);
  call.stop = stop_from_proto(request);
  if (request.has_lagkv()) {
    const v1::LagKv& lk = request.lagkv();
    LagkvRequest lagkv;
    lagkv.enabled = !lk.has_enabled() || lk.enabled();
    if (lk.has_sink()) lagkv.fields.sink = lk.sink();
    if (lk.has_lag()) lagkv.fields.lag = lk.lag();
    if (lk.has_ratio()) lagkv.fields.ratio = lk.ratio();
    if (lk.has_keep()) lagkv.fields.keep = lk.keep();
    if (lk.has_score_v_weight()) lagkv.fields.score_v_weight = lk.score_v_weight();
    call.lagkv = std::move(lagkv);
  }
  call.id_prefix = "grpc";
  call.id = request.request_id();
  return call;
}

absl::StatusOr<PromptInput> tokenize_prompt_from_proto(const v1::TokenizeRequest& request) {
  PromptInput prompt;
  switch (request.input_case()) {
    case v1::TokenizeRequest::kText:
      prompt.kind = PromptInput::Kind::Text;
      prompt.text = request.text();
      return prompt;
    case v1::TokenizeRequest::kChat:
      prompt.kind = PromptInput::Kind::Chat;
      prompt.messages = chat_from_proto(request.chat());
      return prompt;
    case v1::TokenizeRequest::INPUT_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("input is required (text or chat)");
}

void output_to_proto(const runtime::RequestOutput& out, int32_t choice, const ServingCore& core,
                     v1::GenerateResponse* response) {
  response->set_index(static_cast<uint32_t>(choice));
  response->set_text(valid_utf8(out.text));  // already whole characters; this is a guard
  response->mutable_token_ids()->Add(out.tokens.begin(), out.tokens.end());
  for (const runtime::SampleResult& sample : out.logprobs) {
    v1::Logprobs* lp = response->add_logprobs();
    token_logprob_to_proto(sample.token, sample.logprob, core, lp->mutable_chosen());
    for (const runtime::TokenLogprob& top : sample.top) {
      token_logprob_to_proto(top.token, top.logprob, core, lp->add_top());
    }
  }
  response->set_finish_reason(finish_to_proto(out.finish));
  if (out.stop_reason) response->set_stop_reason(valid_utf8(*out.stop_reason));
}

}  // namespace lagserve::server
