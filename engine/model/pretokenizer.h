// Pre-tokenizer: splits text into the pieces that byte-level BPE encodes one
// by one, with the model's own regexes (PCRE2, UTF + Unicode properties, JIT).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {

// Split rules of the model families we serve (as written in their
// tokenizer.json files and in llama.cpp).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Hugging Face Digits(individual_digits = true / false).
inline constexpr std::string_view kDigitPattern = R"(\p{N})";
inline constexpr std::string_view kDigitRunPattern = R"(\p{N}+)";

// An ordered list of regex splits. Each split applies to every piece the
// previous one produced, and keeps both the matches and the text between
// them as pieces (Hugging Face `Split` with behavior "Isolated"), so the
// pieces always concatenate back to the input.
class PreTokenizer {
 public:
  // Compiles the patterns (PCRE2 syntax). InvalidArgument names the pattern
  // and the position of a syntax error.
  static absl::StatusOr<PreTokenizer> create(std::vector<std::string> patterns);

  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;
  ~PreTokenizer();

  // Appends the non-empty pieces of `text` to `out` (views into `text`).
  // Bytes that are not valid UTF-8 never reach a regex: each maximal invalid
  // subpart becomes a piece of its own, so any byte string can be encoded.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Regex;
  PreTokenizer() = default;
  void split_valid(std::string_view text, size_t step,
                   std::vector<std::string_view>& out) const;

  std::vector<std::string> patterns_;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

}  // namespace lagserve::model
