// Tokenizer::from_tokenizer_json: reads a Hugging Face tokenizer.json (BPE
// model, ByteLevel/Split/Digits pre-tokenizers, added tokens, post-processor)
// and optionally tokenizer_config.json; anything else is a clear error.
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "engine/common/status_macros.h"
#include "engine/model/bpe_tokenizer.h"
#include "engine/model/pretokenizer.h"

namespace lagserve::model {
namespace {

using Json = nlohmann::json;

absl::Status unsupported(std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("{} is not supported", what));
}

absl::StatusOr<Json> read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  Json json = Json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(fmt::format("{}: not valid JSON", path));
  }
  return json;
}

std::string type_of(const Json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string()
             ? j["type"].get<std::string>()
             : std::string("(no type)");
}

// A flag that may be absent or null (then `fallback`).
bool flag(const Json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<bool>();
}

// Escapes a literal for a PCRE2 pattern (HF Split with a String pattern).
std::string regex_escape(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

absl::Status read_pre_tokenizer(const Json& j, std::vector<std::string>& patterns,
                                bool& byte_level) {
  const std::string type = type_of(j);
  if (byte_level) {
    return unsupported(fmt::format("pre_tokenizer {} after ByteLevel", type));
  }
  if (type == "Sequence") {
    for (const Json& child : j.at("pretokenizers")) {
      LAGSERVE_RETURN_IF_ERROR(read_pre_tokenizer(child, patterns, byte_level));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    if (flag(j, "add_prefix_space", false)) {
      return unsupported("pre_tokenizer ByteLevel with add_prefix_space = true");
    }
    if (flag(j, "use_regex", true)) patterns.emplace_back(kGpt2Pattern);
    byte_level = true;
    return absl::OkStatus();
  }
  if (type == "Digits") {
    patterns.emplace_back(flag(j, "individual_digits", false) ? kDigitPattern
                                                              : kDigitRunPattern);
    return absl::OkStatus();
  }
  if (type == "Split") {
    const Json& pattern = j.at("pattern");
    const std::string behavior = j.at("behavior").get<std::string>();
    if (behavior != "Isolated") {
      return unsupported(fmt::format("pre_tokenizer Split with behavior '{}' (only Isolated)",
                                     behavior));
    }
    if (flag(j, "invert", false)) return unsupported("pre_tokenizer Split with invert = true");
    if (pattern.contains("Regex")) {
      patterns.push_back(pattern["Regex"].get<std::string>());
    } else if (pattern.contains("String")) {
      patterns.push_back(regex_escape(pattern["String"].get<std::string>()));
    } else {
      return absl::InvalidArgumentError("pre_tokenizer Split has neither Regex nor String");
    }
    return absl::OkStatus();
  }
  if (j.is_null()) {
    return unsupported("a tokenizer without pre_tokenizer (only byte-level BPE is)");
  }
  return unsupported(fmt::format("pre_tokenizer type '{}'", type));
}

absl::Status check_model_options(const Json& model) {
  if (model.contains("type") && type_of(model) != "BPE") {
    return unsupported(fmt::format("model type '{}' (only BPE)", type_of(model)));
  }
  if (model.contains("dropout") && !model["dropout"].is_null()) {
    return unsupported("BPE dropout");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() && !model[key].get<std::string>().empty()) {
      return unsupported(fmt::format("BPE {}", key));
    }
  }
  if (flag(model, "byte_fallback", false)) {
    return unsupported("BPE byte_fallback (a SentencePiece-style vocabulary)");
  }
  return absl::OkStatus();
}

absl::Status check_normalizer_and_decoder(const Json& root) {
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    const Json& n = root["normalizer"];
    const bool empty_sequence = type_of(n) == "Sequence" && n.contains("normalizers") &&
                                n["normalizers"].empty();
    if (!empty_sequence) return unsupported(fmt::format("normalizer '{}'", type_of(n)));
  }
  if (root.contains("decoder") && !root["decoder"].is_null() &&
      type_of(root["decoder"]) != "ByteLevel") {
    return unsupported(fmt::format("decoder '{}' (only ByteLevel)", type_of(root["decoder"])));
  }
  return absl::OkStatus();
}

// BOS from the post-processor: a TemplateProcessing whose single-sequence
// template starts with a special token adds it. Tokens after $A (an EOS that
// the processor would append) cannot be expressed here.
absl::Status read_post_processor(const Json& j, std::optional<std::string>& bos_text) {
  if (j.is_null()) return absl::OkStatus();
  const std::string type = type_of(j);
  if (type == "Sequence") {
    for (const Json& child : j.at("processors")) {
      LAGSERVE_RETURN_IF_ERROR(read_post_processor(child, bos_text));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();
  if (type != "TemplateProcessing") {
    return unsupported(fmt::format("post_processor '{}'", type));
  }
  const Json& single = j.at("single");
  for (size_t i = 0; i < single.size(); ++i) {
    if (!single[i].contains("SpecialToken")) continue;
    if (i != 0) {
      return unsupported("post_processor TemplateProcessing that appends tokens after the text");
    }
    bos_text = single[i]["SpecialToken"].at("id").get<std::string>();
  }
  return absl::OkStatus();
}

// "bos_token": "<s>" or {"content": "<s>", ...} or null.
std::optional<std::string> config_token(const Json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

absl::StatusOr<BpeTokenizerSpec> spec_from_json(const Json& root, const Json& config) {
  if (!root.is_object() || !root.contains("model")) {
    return absl::InvalidArgumentError("no 'model' object: not a tokenizer.json");
  }
  const Json& model = root["model"];
  LAGSERVE_RETURN_IF_ERROR(check_model_options(model));
  LAGSERVE_RETURN_IF_ERROR(check_normalizer_and_decoder(root));
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("model.vocab is missing or not an object");
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return absl::InvalidArgumentError("model.merges is missing or not an array");
  }

  BpeTokenizerSpec spec;
  bool byte_level = false;
  LAGSERVE_RETURN_IF_ERROR(read_pre_tokenizer(root.value("pre_tokenizer", Json()),
                                              spec.pre_patterns, byte_level));
  if (!byte_level) return unsupported("a pre_tokenizer without ByteLevel");

  // Ids come from the vocabulary and from added_tokens (which Llama 3 keeps
  // out of model.vocab).
  auto place = [&](const std::string& text, int64_t id) -> absl::Status {
    if (id < 0 || id >= INT32_MAX) {
      return absl::InvalidArgumentError(fmt::format("token '{}' has bad id {}", text, id));
    }
    if (static_cast<size_t>(id) >= spec.tokens.size()) spec.tokens.resize(id + 1);
    std::string& slot = spec.tokens[id];
    if (!slot.empty() && slot != text) {
      return absl::InvalidArgumentError(
          fmt::format("id {} is given to both '{}' and '{}'", id, slot, text));
    }
    slot = text;
    return absl::OkStatus();
  };
  for (const auto& [text, id] : model["vocab"].items()) {
    if (text.empty()) return absl::InvalidArgumentError("model.vocab has an empty token");
    LAGSERVE_RETURN_IF_ERROR(place(text, id.get<int64_t>()));
  }
  for (const Json& added : root.value("added_tokens", Json::array())) {
    AddedToken token;
    token.text = added.at("content").get<std::string>();
    const int64_t id = added.at("id").get<int64_t>();
    LAGSERVE_RETURN_IF_ERROR(place(token.text, id));
    if (flag(added, "single_word", false)) {
      return unsupported(fmt::format("added token '{}' with single_word = true", token.text));
    }
    token.id = static_cast<int32_t>(id);
    token.special = flag(added, "special", false);
    token.lstrip = flag(added, "lstrip", false);
    token.rstrip = flag(added, "rstrip", false);
    spec.added.push_back(std::move(token));
  }

  const Json& merges = model["merges"];
  spec.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& merge = merges[rank];
    if (merge.is_array() && merge.size() == 2) {
      spec.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
      continue;
    }
    const std::string text = merge.is_string() ? merge.get<std::string>() : merge.dump();
    const size_t space = text.find(' ');
    if (!merge.is_string() || space == std::string::npos || space == 0 ||
        space + 1 == text.size() || text.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          fmt::format("model.merges[{}] = {} is not 'a b' or [a, b]", rank, text));
    }
    spec.merges.emplace_back(text.substr(0, space), text.substr(space + 1));
  }
  spec.ignore_merges = flag(model, "ignore_merges", false);

  auto id_of = [&](const std::string& text, const char* what) -> absl::StatusOr<int32_t> {
    for (size_t id = 0; id < spec.tokens.size(); ++id) {
      if (spec.tokens[id] == text) return static_cast<int32_t>(id);
    }
    return absl::InvalidArgumentError(
        fmt::format("{} '{}' is not in the vocabulary", what, text));
  };
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    LAGSERVE_ASSIGN_OR_RETURN(spec.unk_id,
                              id_of(model["unk_token"].get<std::string>(), "model.unk_token"));
  }

  std::optional<std::string> bos_text;
  LAGSERVE_RETURN_IF_ERROR(read_post_processor(root.value("post_processor", Json()), bos_text));
  spec.add_bos = bos_text.has_value();
  if (auto text = config_token(config, "bos_token")) bos_text = text;
  if (auto text = config_token(config, "eos_token")) {
    LAGSERVE_ASSIGN_OR_RETURN(spec.eos_id, id_of(*text, "eos_token"));
  }
  if (bos_text) {
    LAGSERVE_ASSIGN_OR_RETURN(spec.bos_id, id_of(*bos_text, "bos_token"));
  }
  if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
    spec.add_bos = config["add_bos_token"].get<bool>();
  }
  return spec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_tokenizer_json(
    const std::string& tokenizer_json_path, const std::string& tokenizer_config_path) {
  LAGSERVE_ASSIGN_OR_RETURN(Json root, read_json(tokenizer_json_path));
  Json config = Json::object();
  std::error_code ec;
  if (!tokenizer_config_path.empty() && std::filesystem::exists(tokenizer_config_path, ec)) {
    LAGSERVE_ASSIGN_OR_RETURN(config, read_json(tokenizer_config_path));
  }
  absl::StatusOr<BpeTokenizerSpec> spec;
  try {
    spec = spec_from_json(root, config);
  } catch (const Json::exception& e) {
    // A field of the wrong JSON type or a missing required field.
    spec = absl::InvalidArgumentError(fmt::format("malformed field: {}", e.what()));
  }
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), fmt::format("{}: tokenizer: {}", tokenizer_json_path,
                                    std::string(spec.status().message())));
  }
  return make_bpe_tokenizer(std::move(*spec), tokenizer_json_path);
}

}  // namespace lagserve::model
