// Helpers shared by the subcommands: error line, prompt encoding.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

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
  return tmpl.encode(tok, *messages);
}

runtime::Request request_from_flags(const GenerateArgs& args) {
  runtime::Request r;
  r.sampling.temperature = args.temperature;
  r.sampling.top_p = args.top_p;
  r.sampling.top_k = args.top_k;
  r.sampling.min_p = args.min_p;
  r.stop.max_tokens = args.max_tokens;
  r.stop.stop = args.stop;
  r.stop.ignore_eos = args.ignore_eos;
  return r;
}

absl::Status open_eviction_trace(const std::string& path, std::ofstream& out,
                                 runtime::EngineConfig& config) {
  if (path.empty()) return absl::OkStatus();
  out.open(path);
  if (!out) return absl::InvalidArgumentError("cannot write " + path);
  config.on_eviction = [&out](const std::string& id, const backend::EvictionRecord& e) {
    out << nlohmann::json{{"request", id},         {"layer", e.layer},
                          {"kv_head", e.kv_head},  {"partition", e.partition},
                          {"kept", e.kept_positions}}
               .dump()
        << "\n";
  };
  return absl::OkStatus();
}

}  // namespace lagserve::cli
