// Fuzzes the Hugging Face config.json reader: config_from_hf_json, then
// config_validate on what it returns. Run: scripts/fuzz.sh 600 model_config
#include <cstdint>
#include <string>

#include "engine/model/model_config.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lagserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto c = model::config_from_hf_json(std::string(fuzz::as_view(data, size)), "config.json");
  if (c.ok()) (void)model::config_validate(*c, "config.json");
  return 0;
}
