// Byte-level BPE over token ids: the vocabulary index, the merge table ranked
// as in Hugging Face `tokenizers`, and a thread-safe cache of encoded words.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
// Token text -> id, with lookup by string_view.
using TokenIndex =
    std::unordered_map<std::string, int32_t, StringViewHash, std::equal_to<>>;

class BpeModel {
 public:
  struct Options {
    // Llama-3: a word that is itself a token is not split (HF `ignore_merges`).
    bool ignore_merges = false;
    // Token for bytes missing from the vocabulary; without one such bytes are
    // dropped (as Hugging Face does).
    std::optional<int32_t> unk_id;
  };

  // tokens[id] is the vocabulary in mapped form ("Ġthe"); bpe_may_produce[id]
  // is false for added/special tokens, which BPE must never output (a merge
  // that would create one is ignored). merges are in rank order. Errors: a
  // merge naming a token that is not in the vocabulary, or whose result is
  // not, is InvalidArgument naming the merge.
  static absl::StatusOr<std::unique_ptr<BpeModel>> create(
      const std::vector<std::string>& tokens, const std::vector<bool>& bpe_may_produce,
      const std::vector<std::pair<std::string, std::string>>& merges, Options options);
  ~BpeModel();

  // Appends the ids of one pre-tokenized piece, given as raw bytes.
  void encode_piece(std::string_view raw, std::vector<int32_t>& out) const;

  // Exact lookup of a token's vocabulary text (any token, special included).
  std::optional<int32_t> find(std::string_view text) const;
  size_t n_merges() const { return n_merges_; }

 private:
  struct MergeTable;
  class WordCache;
  BpeModel();

  void merge_word(std::string_view raw, std::vector<int32_t>& out) const;

  TokenIndex index_;
  std::vector<bool> bpe_may_produce_;
  int32_t byte_ids_[256];  // id of each byte's single-character token, or -1
  Options options_;
  size_t n_merges_ = 0;
  std::unique_ptr<MergeTable> merges_;
  std::unique_ptr<WordCache> cache_;
};

}  // namespace lagserve::model
