// Added tokens ("<|im_start|>", user-defined tokens): found in the text before
// pre-tokenization, leftmost first and longest among those starting there.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lagserve::model {

struct AddedToken {
  std::string text;
  int32_t id = -1;
  // Special (control) tokens are matched only when the caller asks to parse
  // special tokens; non-special added tokens (GGUF user-defined) always are,
  // as in Hugging Face `tokenizers` and llama.cpp.
  bool special = true;
  bool lstrip = false;  // the token swallows whitespace before it
  bool rstrip = false;  // ... and after it
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  // A run of plain text (id < 0) or one added token.
  struct Segment {
    std::string_view text;
    int32_t id = -1;
  };
  // Appends the segments of `text` in order; plain segments are non-empty.
  void split(std::string_view text, bool parse_special, std::vector<Segment>& out) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  // For each first byte, indices into tokens_, longest text first.
  std::vector<std::vector<uint32_t>> by_first_byte_;
};

// Unicode White_Space (what Rust's char::is_whitespace and HF use).
bool is_unicode_whitespace(char32_t cp);

}  // namespace lagserve::model
