// Tokenizer::from_gguf: reads the tokenizer.ggml.* metadata of a GGUF file and
// maps tokenizer.ggml.pre to the model's split rules, as llama.cpp does.
#include "absl/status/status.h"
#include <fmt/format.h>

#include "engine/common/status_macros.h"
#include "engine/model/bpe_tokenizer.h"
#include "engine/model/gguf.h"
#include "engine/model/pretokenizer.h"

namespace lagserve::model {
namespace {

// GGUF token types (llama.cpp's llama_token_type).
enum GgufTokenType : int64_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct PreRules {
  std::vector<std::string> patterns;
  bool ignore_merges = false;
  bool add_bos = false;  // when the file does not say
};

absl::StatusOr<PreRules> pre_rules_for(std::string_view pre) {
  if (pre == "smollm") {
    // HF: Digits(individual_digits) then ByteLevel with the GPT-2 regex.
    return PreRules{{std::string(kDigitPattern), std::string(kGpt2Pattern)}, false, false};
  }
  if (pre == "gpt2" || pre == "default") {
    return PreRules{{std::string(kGpt2Pattern)}, false, false};
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    return PreRules{{std::string(kLlama3Pattern)}, true, true};
  }
  if (pre == "qwen2") return PreRules{{std::string(kQwen2Pattern)}, false, false};
  return absl::InvalidArgumentError(fmt::format(
      "tokenizer.ggml.pre '{}' is not supported (supported: smollm, gpt2, default, "
      "llama-bpe, llama3, qwen2)",
      pre));
}

// Optional integer key: nullopt when absent, error when of the wrong type.
absl::StatusOr<std::optional<int64_t>> optional_int(const GgufFile& gguf,
                                                    std::string_view key) {
  if (gguf.find(key) == nullptr) return std::optional<int64_t>();
  LAGSERVE_ASSIGN_OR_RETURN(int64_t value, gguf.get_int(key));
  return std::optional<int64_t>(value);
}

absl::StatusOr<std::optional<int32_t>> optional_id(const GgufFile& gguf, std::string_view key,
                                                   size_t n_tokens) {
  LAGSERVE_ASSIGN_OR_RETURN(std::optional<int64_t> value, optional_int(gguf, key));
  // llama.cpp writes -1 (as uint32 0xFFFFFFFF in some converters) for "none".
  if (!value || *value == -1 || *value == 0xFFFFFFFF) return std::optional<int32_t>();
  if (*value < 0 || *value >= static_cast<int64_t>(n_tokens)) {
    return absl::InvalidArgumentError(
        fmt::format("{} = {} is outside the vocabulary [0, {})", key, *value, n_tokens));
  }
  return std::optional<int32_t>(static_cast<int32_t>(*value));
}

absl::StatusOr<BpeTokenizerSpec> spec_from_gguf(const GgufFile& gguf) {
  auto model = gguf.get_string("tokenizer.ggml.model");
  if (!model.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("the file has no usable tokenizer.ggml.model ({})",
                    std::string(model.status().message())));
  }
  if (*model != "gpt2") {
    return absl::InvalidArgumentError(fmt::format(
        "tokenizer.ggml.model '{}' is not supported (only byte-level BPE, 'gpt2')", *model));
  }
  std::string pre = "default";  // what llama.cpp assumes for older files
  if (gguf.find("tokenizer.ggml.pre") != nullptr) {
    LAGSERVE_ASSIGN_OR_RETURN(pre, gguf.get_string("tokenizer.ggml.pre"));
  }
  LAGSERVE_ASSIGN_OR_RETURN(PreRules rules, pre_rules_for(pre));

  BpeTokenizerSpec spec;
  LAGSERVE_ASSIGN_OR_RETURN(spec.tokens, gguf.get_string_array("tokenizer.ggml.tokens"));
  const size_t n = spec.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("tokenizer.ggml.tokens is empty");
  if (n > static_cast<size_t>(INT32_MAX)) {
    return absl::InvalidArgumentError("tokenizer.ggml.tokens has too many entries");
  }

  std::vector<int64_t> types(n, kNormal);
  if (gguf.find("tokenizer.ggml.token_type") != nullptr) {
    LAGSERVE_ASSIGN_OR_RETURN(types, gguf.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != n) {
      return absl::InvalidArgumentError(
          fmt::format("tokenizer.ggml.token_type has {} entries but there are {} tokens",
                      types.size(), n));
    }
  }
  for (size_t id = 0; id < n; ++id) {
    const int64_t type = types[id];
    if (type < kUndefined || type > kByte) {
      return absl::InvalidArgumentError(
          fmt::format("token {} has unknown token type {}", id, type));
    }
    if (type == kControl || type == kUnknown || type == kUserDefined) {
      if (spec.tokens[id].empty()) continue;  // nothing to match
      AddedToken token;
      token.text = spec.tokens[id];
      token.id = static_cast<int32_t>(id);
      token.special = type != kUserDefined;
      spec.added.push_back(std::move(token));
    }
  }

  LAGSERVE_ASSIGN_OR_RETURN(std::vector<std::string> merges,
                            gguf.get_string_array("tokenizer.ggml.merges"));
  spec.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& merge = merges[rank];
    // Byte-level tokens never contain a space, so "a b" has exactly one.
    const size_t space = merge.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merge.size() ||
        merge.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(fmt::format(
          "tokenizer.ggml.merges[{}] = '{}' is not of the form 'a b'", rank, merge));
    }
    spec.merges.emplace_back(merge.substr(0, space), merge.substr(space + 1));
  }

  spec.pre_patterns = std::move(rules.patterns);
  spec.ignore_merges = rules.ignore_merges;
  LAGSERVE_ASSIGN_OR_RETURN(spec.bos_id, optional_id(gguf, "tokenizer.ggml.bos_token_id", n));
  LAGSERVE_ASSIGN_OR_RETURN(spec.eos_id, optional_id(gguf, "tokenizer.ggml.eos_token_id", n));
  LAGSERVE_ASSIGN_OR_RETURN(auto eot_id, optional_id(gguf, "tokenizer.ggml.eot_token_id", n));
  if (eot_id) spec.extra_stop_ids.push_back(*eot_id);
  LAGSERVE_ASSIGN_OR_RETURN(auto eom_id, optional_id(gguf, "tokenizer.ggml.eom_token_id", n));
  if (eom_id) spec.extra_stop_ids.push_back(*eom_id);
  spec.add_bos = rules.add_bos;
  if (gguf.find("tokenizer.ggml.add_bos_token") != nullptr) {
    LAGSERVE_ASSIGN_OR_RETURN(spec.add_bos, gguf.get_bool("tokenizer.ggml.add_bos_token"));
  }
  return spec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufFile& gguf) {
  auto spec = spec_from_gguf(gguf);
  if (!spec.ok()) {
    return absl::Status(spec.status().code(),
                        fmt::format("{}: tokenizer: {}", gguf.path(),
                                    std::string(spec.status().message())));
  }
  return make_bpe_tokenizer(std::move(*spec), gguf.path());
}

}  // namespace lagserve::model
