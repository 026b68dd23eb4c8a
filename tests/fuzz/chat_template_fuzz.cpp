// Fuzzes chat-template recognition and rendering. Input: one flag byte (bits
// 0-1: no override, chatml, llama3; bit 2: add_generation_prompt; bit 3:
// add_special), then pieces separated by NUL bytes: the Jinja text, then one
// message per piece, "role:content". Rendered, then encoded with the tiny
// golden model's tokenizer. Run: scripts/fuzz.sh 600 chat_template
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <vector>

#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "tests/fuzz/fuzz_util.h"

using namespace lagserve;

namespace {

const model::Tokenizer& tokenizer() {
  static const std::unique_ptr<model::Model> m = [] {
    auto loaded = model::load_model(
        std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-qwen2", {.weights = false});
    if (!loaded.ok()) std::abort();
    return *std::move(loaded);
  }();
  return *m->tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::vector<std::string_view> pieces;
  std::string_view rest = fuzz::as_view(data + 1, size - 1);
  while (true) {
    const size_t nul = rest.find('\0');
    pieces.push_back(rest.substr(0, nul));
    if (nul == std::string_view::npos) break;
    rest.remove_prefix(nul + 1);
  }
  std::optional<model::ChatFormat> override_format;
  if ((flags & 3) == 1) override_format = model::ChatFormat::ChatML;
  if ((flags & 3) == 2) override_format = model::ChatFormat::Llama3;
  auto tmpl = model::detect_chat_template(pieces[0], override_format);
  if (!tmpl.ok()) return 0;

  std::vector<model::ChatMessage> messages;
  for (size_t i = 1; i < pieces.size(); ++i) {
    const size_t colon = pieces[i].find(':');
    if (colon == std::string_view::npos) {
      messages.push_back({"user", std::string(pieces[i])});
    } else {
      messages.push_back(
          {std::string(pieces[i].substr(0, colon)), std::string(pieces[i].substr(colon + 1))});
    }
  }
  (void)tmpl->render(messages, flags & 4);
  (void)tmpl->encode(tokenizer(), messages,
                     (flags & 8) ? std::optional<bool>(true) : std::nullopt);
  return 0;
}
