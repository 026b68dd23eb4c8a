// Haystacks for the synthetic long-context tasks: varied filler sentences (no
// digits) with needle sentences hidden at random depths, fitted to a length.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {
class Tokenizer;
}

namespace lagserve::trainer {

// One grammatical sentence of about 8-16 words from built-in word lists;
// never contains a digit.
std::string filler_sentence(std::mt19937_64& rng);
// A short sentence (2-4 words) used to fine-tune a haystack's length.
std::string short_filler_sentence(std::mt19937_64& rng);

struct Haystack {
  std::string intro;                 // the instructions before the text
  std::vector<std::string> needles;  // sentences hidden in the filler
  std::string question;              // after the text; the prompt ends with it
};

// The prompt intro + "\n\n" + filler with each needle at an independent
// uniformly random depth + "\n\n" + question, whose token count (encoded with
// the tokenizer's default BOS) is in [length_tokens - tolerance,
// length_tokens]. The filler is estimated sentence by sentence and corrected
// with a few whole-prompt tokenizations, so the cost is linear in the length.
// Errors: InvalidArgument when the fixed text (intro, needles, question)
// alone is longer than length_tokens. Precondition: tolerance >= 8.
absl::StatusOr<std::string> fit_haystack(const Haystack& haystack, int32_t length_tokens,
                                         int32_t tolerance, const model::Tokenizer& tok,
                                         std::mt19937_64& rng);

}  // namespace lagserve::trainer
