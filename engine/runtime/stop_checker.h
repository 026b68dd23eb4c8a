// Stop conditions and incremental detokenization for one sequence: EOS and
// stop ids, stop strings across token boundaries, min/max tokens, and text
// that is released only when it can no longer turn into a stop string.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/model/tokenizer.h"

namespace lagserve::runtime {

struct StopParams {
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;                // EOS / stop ids / stop strings count only after this many
  std::vector<std::string> stop;         // stop strings (non-empty)
  std::vector<int32_t> stop_token_ids;   // besides EOS
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  bool include_stop_str_in_output = false;  // also the stop token's text, as in vLLM
};

// InvalidArgument naming the field: max_tokens >= 1, 0 <= min_tokens <=
// max_tokens, no empty stop string, stop ids inside [0, vocab_size).
absl::Status validate(const StopParams& params, int32_t vocab_size);

enum class FinishReason { None, Stop, Length, Abort };

// Semantics (vLLM's, made independent of how the text splits into tokens):
//  - A token in eos_ids (unless ignore_eos) or in stop_token_ids ends the
//    sequence with Stop, once at least min_tokens tokens came before it. Its
//    text is not output unless include_stop_str_in_output.
//  - Stop strings are matched in the decoded text once the output has
//    min_tokens tokens. When several could match, the one that is complete
//    first in the text wins (ties: the longer one). The text ends right before
//    it (or right after, with include_stop_str_in_output); anything after it
//    is dropped.
//  - After max_tokens tokens the sequence ends with Length.
// A finishing update carries all remaining text (held-back text and any
// incomplete UTF-8, repaired as U+FFFD).
class OutputStream {
 public:
  // Precondition: validate(params, ...) is OK.
  OutputStream(const model::Tokenizer& tokenizer, StopParams params, std::vector<int32_t> eos_ids);

  struct Update {
    std::string text;  // safe to show: never a partial character or a possible stop prefix
    FinishReason finish = FinishReason::None;
    std::optional<std::string> matched_stop;  // the stop string that ended the sequence
    std::optional<int32_t> stop_token;        // the EOS / stop id that ended it
  };

  // Feeds one generated token. Precondition: !finished().
  Update push(int32_t token);
  // Ends the stream from outside (abort, context full): returns whatever was
  // held back. Empty after an update that finished the sequence.
  std::string finish_text();
  // The ids the sampler must not pick now: EOS (unless ignore_eos) and the
  // stop ids while fewer than min_tokens tokens were output; else empty.
  std::vector<int32_t> banned_ids() const;

  bool finished() const { return finished_; }
  int32_t n_output() const { return n_output_; }

 private:
  // Length of the longest suffix of pending_ that is a proper prefix of some
  // stop string (text that must be held back).
  size_t held_suffix() const;
  bool is_stop_token(int32_t token) const;

  const model::Tokenizer& tokenizer_;
  StopParams params_;
  std::vector<int32_t> eos_ids_;
  model::StreamDecoder decoder_;
  std::string pending_;  // decoded text not yet released
  int32_t n_output_ = 0;
  bool finished_ = false;
};

}  // namespace lagserve::runtime
