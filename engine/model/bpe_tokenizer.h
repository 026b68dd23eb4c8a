// The byte-level BPE Tokenizer, built from a format-neutral description that
// the GGUF and tokenizer.json loaders fill in.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/bpe_added_tokens.h"
#include "engine/model/tokenizer.h"

namespace lagserve::model {

struct BpeTokenizerSpec {
  // Vocabulary by id, in the byte-mapped form ("Ġthe"); "" marks an id that
  // no token has (a hole some vocabularies leave).
  std::vector<std::string> tokens;
  // Tokens matched in the text before pre-tokenization and decoded as their
  // own text. They are never produced by BPE.
  std::vector<AddedToken> added;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  // Pre-tokenizer regexes, applied in turn (see PreTokenizer).
  std::vector<std::string> pre_patterns;
  bool ignore_merges = false;
  std::optional<int32_t> unk_id;
  std::optional<int32_t> bos_id;
  std::optional<int32_t> eos_id;
  bool add_bos = false;
  // Ids that end generation besides EOS and the well-known end-of-turn tokens
  // (GGUF tokenizer.ggml.eot_token_id).
  std::vector<int32_t> extra_stop_ids;
};

// Validates the spec (ids in range, merges consistent with the vocabulary,
// regexes compile) and builds the tokenizer. `source` names the file in
// error messages.
absl::StatusOr<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(BpeTokenizerSpec spec,
                                                             std::string_view source);

}  // namespace lagserve::model
