// Fuzzes the validation of OpenAI request bodies. First byte even: the rest
// is a /v1/completions body; odd: a /v1/chat/completions body. A request
// that parses must carry a lagkv override that the policy accepts or refuses
// with a status. Run: scripts/fuzz.sh 600 openai_request
#include <cstdint>
#include <variant>

#include "engine/kv/lag_policy.h"
#include "server/openai_request.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lagserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  auto parsed = server::parse_openai_request(fuzz::as_view(data + 1, size - 1), chat);
  if (auto* error = std::get_if<server::ApiError>(&parsed)) {
    (void)server::param_of(error->message);
    return 0;
  }
  const server::OpenAiCall& call = std::get<server::OpenAiCall>(parsed);
  if (call.call.lagkv && call.call.lagkv->enabled) {
    (void)kv::LagPolicy::from_fields(call.call.lagkv->fields);
  }
  return 0;
}
