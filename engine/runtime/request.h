// What a client hands the engine (Request) and what it gets back, step by
// step (RequestOutput). Plain data: no JSON, no transport.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/kv/lag_policy.h"
#include "engine/runtime/sampler.h"
#include "engine/runtime/stop_checker.h"

namespace lagserve::runtime {

struct Request {
  std::string id;                    // chosen by the client; unique among live requests
  std::vector<int32_t> prompt;       // token ids
  SamplingParams sampling;
  StopParams stop;
  // KV policy for this request; unset means the engine's default.
  std::optional<kv::LagPolicy> lagkv;
};

struct RequestOutput {
  std::string id;
  std::string text;                  // new text since the last output
  std::vector<int32_t> tokens;       // new token ids since the last output
  std::vector<SampleResult> logprobs;  // per new token, when asked for
  FinishReason finish = FinishReason::None;
  std::optional<std::string> stop_reason;  // the stop string or token that matched
  std::optional<int32_t> stop_token;       // the EOS or stop id that matched, if a token did
  std::string error;                 // set when the request failed (finish == Abort)
  int32_t n_prompt = 0;
  int32_t n_output = 0;              // tokens generated so far
  int32_t n_preemptions = 0;
  // Seconds between add_request and the step that first scheduled it
  // (0 until then).
  double queue_seconds = 0;

  bool finished() const { return finish != FinishReason::None; }
};

}  // namespace lagserve::runtime
