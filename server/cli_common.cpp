// Helpers shared by the subcommands: error line, prompt encoding.
#include <fmt/format.h>

#include "engine/common/status_macros.h"
#include "server/cli.h"

namespace lagserve::cli {

int fail(const absl::Status& status) {
  fmt::print(stderr, "lagserve: error: {}\n", std::string(status.message()));
  return 1;
}

absl::StatusOr<std::vector<int32_t>> encode_prompt(
    const model::Model& model, const std::string& text,
    const std::vector<model::ChatMessage>* messages,
    const std::optional<std::string>& template_name) {
  const model::Tokenizer& tok = *model.tokenizer;
  if (!messages) return tok.encode(text, tok.add_bos_default());
  std::optional<model::ChatFormat> format;
  if (template_name) {
    LAGSERVE_ASSIGN_OR_RETURN(format, model::parse_chat_format(*template_name));
  }
  LAGSERVE_ASSIGN_OR_RETURN(model::ChatTemplate tmpl,
                            model::detect_chat_template(model.chat_template, format));
  const std::string rendered = tmpl.render(*messages, /*add_generation_prompt=*/true);
  // The template writes BOS itself when it has one (Llama-3).
  return tok.encode(rendered, tok.add_bos_default() && tmpl.bos_text.empty());
}

}  // namespace lagserve::cli
