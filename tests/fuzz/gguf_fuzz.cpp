// Fuzzes the GGUF path of the loader: GgufFile's header, metadata and tensor
// directory, then everything load_model reads from them (config, tokenizer,
// chat template, weights) and the lagkv.* policy keys. Any input must give a
// model or a status; never a crash, a leak or a huge allocation.
// Run: scripts/fuzz.sh 600 gguf
#include <cstdint>

#include "engine/kv/lag_policy.h"
#include "engine/model/gguf.h"
#include "engine/model/model.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lagserve;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_scratch("model.gguf", fuzz::as_view(data, size));
  auto gguf = model::GgufFile::open(path);
  if (!gguf.ok()) return 0;
  // Every typed getter on every key: each either converts or says why not.
  for (const auto& [key, value] : (*gguf)->metadata()) {
    (void)(*gguf)->get_string(key);
    (void)(*gguf)->get_int(key);
    (void)(*gguf)->get_float(key);
    (void)(*gguf)->get_bool(key);
    (void)(*gguf)->get_string_array(key);
    (void)(*gguf)->get_int_array(key);
    (void)(*gguf)->get_float_array(key);
  }
  (void)kv::lag_policy_from_gguf(**gguf);
  auto m = model::load_model(path);
  if (m.ok()) {
    // A model that loads must be usable: round trip a little text.
    const auto ids = (*m)->tokenizer->encode("Hello world", true);
    (void)(*m)->tokenizer->decode(ids);
  }
  return 0;
}
