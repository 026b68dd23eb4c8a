// Fuzzes the tokenizer of the default model (SmolLM2, byte-level BPE; the tiny
// golden model when the default is not fetched) on arbitrary bytes. First
// byte: bit 0 add_bos, bit 1 parse_special, bit 2 skip_special on decode. The
// rest is encoded and decoded again, which must give UTF-8 text back; then it is
// read as int32 ids (any value) and decoded, in one go and streamed.
// Run: scripts/fuzz.sh 600 tokenizer
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "engine/model/unicode_bytes.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lagserve;

namespace {

const model::Tokenizer& tokenizer() {
  static const std::unique_ptr<model::Model> m = [] {
    auto loaded = model::load_model("default", {.weights = false});
    if (!loaded.ok()) {
      std::fprintf(stderr, "tokenizer_fuzz: %s; using tiny-llama.gguf\n",
                   std::string(loaded.status().message()).c_str());
      loaded = model::load_model(
          std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-llama.gguf",
          {.weights = false});
    }
    if (!loaded.ok()) std::abort();
    return *std::move(loaded);
  }();
  return *m->tokenizer;
}

// The text less the bytes whose byte-level character is not in the vocabulary.
std::string without_tokenless_bytes(std::string_view text) {
  static const std::array<bool, 256> has_token = [] {
    std::array<bool, 256> has{};
    for (int b = 0; b < 256; ++b) {
      has[b] = tokenizer().find_token(model::byte_to_mapped_utf8(static_cast<uint8_t>(b))).has_value();
    }
    return has;
  }();
  std::string out;
  for (char c : text) {
    if (has_token[static_cast<uint8_t>(c)]) out += c;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const model::Tokenizer& tok = tokenizer();
  const bool add_bos = data[0] & 1, parse_special = data[0] & 2, skip_special = data[0] & 4;
  const std::string_view text = fuzz::as_view(data + 1, size - 1);

  std::vector<int32_t> ids = tok.encode(text, add_bos, parse_special);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) std::abort();
  }
  // Byte-level BPE is lossless on UTF-8: without BOS, decoding gives the text
  // back, less the bytes that have no token (SmolLM2 has none for 0x13 or
  // 0xff), which are dropped as Hugging Face does.
  if (!add_bos && model::utf8_valid_prefix(text) == text.size() &&
      tok.decode(ids) != without_tokenless_bytes(text)) {
    std::fprintf(stderr, "tokenizer_fuzz: decode(encode(text)) != text\n");
    std::abort();
  }

  std::vector<int32_t> raw((size - 1) / 4);
  if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
  (void)tok.decode(raw, skip_special);
  model::StreamDecoder stream(tok, skip_special);
  for (int32_t id : raw) {
    (void)tok.token_bytes(id);
    (void)tok.is_special(id);
    if (id >= 0 && id < tok.vocab_size()) (void)stream.push(id);
  }
  (void)stream.flush();
  return 0;
}
