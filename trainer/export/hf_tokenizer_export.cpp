// hf_tokenizer_files: copies a Hugging Face folder's tokenizer files, or turns
// a GGUF file's byte-level BPE metadata into an equivalent tokenizer.json.
#include "trainer/export/hf_tokenizer_export.h"

#include <filesystem>
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/common/status_macros.h"
#include "engine/model/gguf.h"
#include "engine/model/pretokenizer.h"
#include "trainer/export/file_io.h"

namespace lagserve::trainer {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// GGUF token types (llama.cpp's llama_token_type) that become added tokens.
constexpr int64_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4;

Json byte_level(bool use_regex) {
  return Json{{"type", "ByteLevel"},
              {"add_prefix_space", false},
              {"trim_offsets", true},
              {"use_regex", use_regex}};
}

Json split_isolated(std::string_view regex) {
  return Json{{"type", "Split"},
              {"pattern", {{"Regex", regex}}},
              {"behavior", "Isolated"},
              {"invert", false}};
}

struct PreTokenizerJson {
  Json pre_tokenizer;
  bool ignore_merges = false;
};

// The split rules the engine gives each tokenizer.ggml.pre (bpe_from_gguf.cpp),
// written as the pre_tokenizer that the model's own tokenizer.json has.
absl::StatusOr<PreTokenizerJson> pre_tokenizer_for(std::string_view pre,
                                                   const std::string& origin) {
  if (pre == "smollm") {
    return PreTokenizerJson{
        Json{{"type", "Sequence"},
             {"pretokenizers",
              Json::array({Json{{"type", "Digits"}, {"individual_digits", true}},
                           byte_level(true)})}},
        false};
  }
  if (pre == "gpt2" || pre == "default") return PreTokenizerJson{byte_level(true), false};
  const bool llama3 = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
  if (llama3 || pre == "qwen2") {
    return PreTokenizerJson{
        Json{{"type", "Sequence"},
             {"pretokenizers", Json::array({split_isolated(llama3 ? model::kLlama3Pattern
                                                                  : model::kQwen2Pattern),
                                            byte_level(false)})}},
        llama3};
  }
  return absl::UnimplementedError(fmt::format(
      "{}: tokenizer.ggml.pre '{}' has no tokenizer.json form here", origin, pre));
}

Json id_or_text_null(const model::Tokenizer& tok, std::optional<int32_t> id) {
  return id ? Json(tok.token_text(*id)) : Json(nullptr);
}

// TemplateProcessing that puts BOS before each sequence, as Llama 3's does.
Json bos_post_processor(const std::string& bos, int32_t bos_id) {
  const Json bos0 = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  const Json bos1 = {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}};
  const Json a = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
  const Json b = {{"Sequence", {{"id", "B"}, {"type_id", 1}}}};
  return Json{{"type", "TemplateProcessing"},
              {"single", Json::array({bos0, a})},
              {"pair", Json::array({bos0, a, bos1, b})},
              {"special_tokens",
               {{bos, {{"id", bos}, {"ids", Json::array({bos_id})}, {"tokens", Json::array({bos})}}}}}};
}

absl::StatusOr<std::string> dump_json(const Json& j, const std::string& origin,
                                      std::string_view what) {
  try {
    return j.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {  // a string that is not UTF-8
    return absl::InvalidArgumentError(
        fmt::format("{}: cannot write {}: {}", origin, what, e.what()));
  }
}

absl::StatusOr<std::string> tokenizer_json_from_gguf(const model::GgufFile& gguf,
                                                     const model::Tokenizer& tok) {
  const std::string& origin = gguf.path();
  LAGSERVE_ASSIGN_OR_RETURN(std::string model_name, gguf.get_string("tokenizer.ggml.model"));
  if (model_name != "gpt2") {
    return absl::UnimplementedError(fmt::format(
        "{}: tokenizer.ggml.model '{}' is not byte-level BPE", origin, model_name));
  }
  std::string pre = "default";  // the engine's (and llama.cpp's) assumption
  if (gguf.find("tokenizer.ggml.pre") != nullptr) {
    LAGSERVE_ASSIGN_OR_RETURN(pre, gguf.get_string("tokenizer.ggml.pre"));
  }
  LAGSERVE_ASSIGN_OR_RETURN(PreTokenizerJson pre_json, pre_tokenizer_for(pre, origin));
  LAGSERVE_ASSIGN_OR_RETURN(std::vector<std::string> tokens,
                            gguf.get_string_array("tokenizer.ggml.tokens"));
  std::vector<int64_t> types(tokens.size(), kTypeNormal);
  if (gguf.find("tokenizer.ggml.token_type") != nullptr) {
    LAGSERVE_ASSIGN_OR_RETURN(types, gguf.get_int_array("tokenizer.ggml.token_type"));
  }
  if (types.size() != tokens.size()) {
    return absl::InvalidArgumentError(fmt::format(
        "{}: {} token types for {} tokens", origin, types.size(), tokens.size()));
  }
  LAGSERVE_ASSIGN_OR_RETURN(std::vector<std::string> merges,
                            gguf.get_string_array("tokenizer.ggml.merges"));

  // NOTE: the vocabulary is built in id order straight into the object's
  // vector (ordered_json's own insert searches linearly: quadratic for 150k
  // tokens); uniqueness is checked here instead.
  Json::object_t vocab;
  vocab.reserve(tokens.size());
  std::unordered_map<std::string_view, size_t> first_id;
  Json added = Json::array();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& text = tokens[id];
    if (text.empty()) {
      return absl::UnimplementedError(
          fmt::format("{}: token {} is empty, which tokenizer.json cannot hold", origin, id));
    }
    if (auto [it, fresh] = first_id.emplace(text, id); !fresh) {
      return absl::UnimplementedError(fmt::format(
          "{}: tokens {} and {} are both '{}', which tokenizer.json cannot hold", origin,
          it->second, id, text));
    }
    static_cast<Json::object_t::Container&>(vocab).emplace_back(text, Json(id));
    const int64_t type = types[id];
    if (type == kTypeControl || type == kTypeUnknown || type == kTypeUserDefined) {
      const bool special = type != kTypeUserDefined;  // as the engine's GGUF reader
      added.push_back(Json{{"id", id},
                           {"content", text},
                           {"single_word", false},
                           {"lstrip", false},
                           {"rstrip", false},
                           {"normalized", !special},
                           {"special", special}});
    }
  }

  Json model = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", pre_json.ignore_merges}};
  model["vocab"] = Json(std::move(vocab));
  model["merges"] = merges;

  Json root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = std::move(added);
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = std::move(pre_json.pre_tokenizer);
  if (tok.add_bos_default() && tok.bos_id()) {
    root["post_processor"] = bos_post_processor(tok.token_text(*tok.bos_id()), *tok.bos_id());
  } else {
    root["post_processor"] = Json{{"type", "ByteLevel"},
                                  {"add_prefix_space", true},
                                  {"trim_offsets", false},
                                  {"use_regex", true}};
  }
  root["decoder"] = Json{
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  root["model"] = std::move(model);
  return dump_json(root, origin, "tokenizer.json");
}

Json special_tokens_map(const model::Tokenizer& tok) {
  Json j = Json::object();
  if (auto bos = tok.bos_id()) j["bos_token"] = tok.token_text(*bos);
  if (auto eos = tok.eos_id()) j["eos_token"] = tok.token_text(*eos);
  return j;
}

}  // namespace

absl::StatusOr<HfTokenizerFiles> hf_tokenizer_files(const model::Model& base) {
  if (!base.tokenizer) {
    return absl::InvalidArgumentError(fmt::format("{}: the model has no tokenizer", base.source));
  }
  const model::Tokenizer& tok = *base.tokenizer;
  HfTokenizerFiles files;
  Json config = Json::object();
  Json special_map;
  std::error_code ec;
  if (fs::is_directory(base.source, ec)) {
    const fs::path dir(base.source);
    LAGSERVE_ASSIGN_OR_RETURN(files.tokenizer_json, read_text_file((dir / "tokenizer.json").string()));
    const fs::path config_path = dir / "tokenizer_config.json";
    if (fs::exists(config_path, ec)) {
      LAGSERVE_ASSIGN_OR_RETURN(std::string text, read_text_file(config_path.string()));
      config = Json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!config.is_object()) {
        return absl::InvalidArgumentError(
            fmt::format("{}: not a JSON object", config_path.string()));
      }
    }
    const fs::path map_path = dir / "special_tokens_map.json";
    if (fs::exists(map_path, ec)) {
      LAGSERVE_ASSIGN_OR_RETURN(files.special_tokens_map_json, read_text_file(map_path.string()));
    }
  } else {
    LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<model::GgufFile> gguf,
                              model::GgufFile::open(base.source));
    LAGSERVE_ASSIGN_OR_RETURN(files.tokenizer_json, tokenizer_json_from_gguf(*gguf, tok));
    config["tokenizer_class"] = "PreTrainedTokenizerFast";
    config["clean_up_tokenization_spaces"] = false;
    config["model_max_length"] = base.config.max_positions;
  }
  if (!config.contains("add_bos_token")) config["add_bos_token"] = tok.add_bos_default();
  if (!config.contains("bos_token")) config["bos_token"] = id_or_text_null(tok, tok.bos_id());
  if (!config.contains("eos_token")) config["eos_token"] = id_or_text_null(tok, tok.eos_id());
  if (!base.chat_template.empty()) config["chat_template"] = base.chat_template;
  LAGSERVE_ASSIGN_OR_RETURN(files.tokenizer_config_json,
                            dump_json(config, base.source, "tokenizer_config.json"));
  if (files.special_tokens_map_json.empty()) {
    LAGSERVE_ASSIGN_OR_RETURN(files.special_tokens_map_json,
                              dump_json(special_tokens_map(tok), base.source,
                                        "special_tokens_map.json"));
  }
  return files;
}

}  // namespace lagserve::trainer
