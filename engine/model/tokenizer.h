// Byte-level BPE tokenizer (GPT-2 family: SmolLM2, Llama 3, Qwen2), loaded from
// GGUF metadata or from a Hugging Face tokenizer.json. Special/added tokens are
// matched in the text before pre-tokenization; the pre-tokenizer regex is the
// model's own (PCRE2 with Unicode properties).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {

class GgufFile;

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> from_gguf(const GgufFile& gguf);
  // tokenizer.json, plus tokenizer_config.json for BOS/EOS and add_bos when
  // that path is non-empty and exists.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> from_tokenizer_json(
      const std::string& tokenizer_json_path,
      const std::string& tokenizer_config_path);
  virtual ~Tokenizer() = default;

  // Encodes text. Special tokens written in the text ("<|im_start|>") become
  // their ids when parse_special is true. BOS is prepended when add_bos is
  // true (callers pass add_bos_default() for the model's own behaviour).
  // Non-special added tokens (GGUF user-defined) are matched either way, as
  // in Hugging Face. Thread-safe; text need not be valid UTF-8.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos,
                                      bool parse_special = true) const = 0;
  // Concatenated bytes of the tokens; special tokens are skipped when
  // skip_special is true. May end in an incomplete UTF-8 sequence.
  virtual std::string decode(std::span<const int32_t> ids,
                             bool skip_special = false) const = 0;
  // Raw bytes of one token (after undoing the byte-level mapping).
  virtual std::string token_bytes(int32_t id) const = 0;
  // The token's string as stored in the vocabulary ("Ġthe", "<|im_end|>").
  virtual const std::string& token_text(int32_t id) const = 0;
  virtual std::optional<int32_t> find_token(std::string_view text) const = 0;
  virtual bool is_special(int32_t id) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool add_bos_default() const = 0;
  // Ids that end generation: EOS plus end-of-turn tokens of the chat format
  // that the vocabulary has (<|im_end|>, <|eot_id|>, <|endoftext|>).
  virtual std::vector<int32_t> stop_ids() const = 0;
};

// Turns a stream of token ids into text without ever emitting a partial UTF-8
// character: bytes of an incomplete character are held until it completes.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = true)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  // Returns the text that became complete with this token (maybe empty).
  std::string push(int32_t id);
  // Returns whatever is held back (invalid/incomplete bytes as U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace lagserve::model
