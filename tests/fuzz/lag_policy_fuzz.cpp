// Fuzzes the lagkv policy parsers. First byte even: the rest is a --lagkv
// spec for LagPolicy::parse; odd: a config.json text whose "lagkv" member
// lag_policy_from_config_json reads. A policy that parses must validate and
// survive its own serialisation unchanged. Run: scripts/fuzz.sh 600 lag_policy
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/kv/lag_policy.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lagserve;

namespace {

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "lag_policy_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(fuzz::as_view(data + 1, size - 1));
  if ((data[0] & 1) == 0) {
    auto p = kv::LagPolicy::parse(text);
    if (!p.ok()) return 0;
    expect(p->validate().ok(), "a parsed spec does not validate");
    auto again = kv::LagPolicy::parse(p->to_string());
    expect(again.ok() && *again == *p, "parse(to_string()) differs");
  } else {
    auto p = kv::lag_policy_from_config_json(text);
    if (!p.ok() || !p->has_value()) return 0;
    expect((*p)->validate().ok(), "a policy read from config.json does not validate");
    auto again = kv::lag_policy_from_config_json("{\"lagkv\": " +
                                                 kv::lag_policy_to_config_json(**p) + "}");
    expect(again.ok() && again->has_value() && **again == **p,
           "config.json round trip differs");
  }
  return 0;
}
