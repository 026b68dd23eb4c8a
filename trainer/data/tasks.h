// Synthetic long-context tasks of any length (RULER-like): passkey retrieval,
// multi-key needle retrieval and combining scattered facts. Used to make
// training data (lagtrain make-data) and by `lagserve eval`.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <random>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lagserve::model {
class Tokenizer;
}

namespace lagserve::trainer {

enum class Task {
  // "The pass key is NNNNN. Remember it. NNNNN is the pass key." hidden in
  // filler; answer the 5-digit pass key.
  Passkey,
  // RULER niah_multikey: 4-8 needles "One of the special magic numbers for
  // <word-word> is: <7-digit number>."; one key is asked; answer its number.
  MultiKey,
  // The four digits of a vault code stated one per sentence ("The second digit
  // of the vault code is 7.") at random depths; answer the whole code, "3917".
  Facts,
};

// "passkey", "multikey", "facts" (any case); the error lists the valid names.
absl::StatusOr<Task> parse_task(std::string_view name);
std::string_view task_name(Task task);

// A prompt's token count is in [length_tokens - kTaskLengthTolerance, length_tokens].
inline constexpr int32_t kTaskLengthTolerance = 8;

struct TaskSample {
  std::string prompt;  // ends with the start of the answer sentence ("... The pass key is")
  std::string answer;  // the exact answer string, e.g. "71432"
};

// A sample whose prompt, tokenized with tok.encode(prompt,
// tok.add_bos_default()), has between length_tokens - kTaskLengthTolerance
// and length_tokens tokens; the answer's tokens are extra. Deterministic
// given the rng state (portable: no std distributions). The filler never
// contains a digit, so the only digits in the prompt are the needles'.
// Errors: InvalidArgument when length_tokens is too small for the task's
// fixed text (about 60-200 tokens depending on the task).
absl::StatusOr<TaskSample> make_task_sample(Task task, int32_t length_tokens,
                                            const model::Tokenizer& tok, std::mt19937_64& rng);

// Writes count samples as JSONL lines {"prompt": ..., "completion": " " + answer},
// drawn from std::mt19937_64(seed), for `lagtrain make-data`. Errors: those of
// make_task_sample, a negative count, a failed write.
absl::Status write_task_jsonl(Task task, int32_t length_tokens, int32_t count, uint64_t seed,
                              const model::Tokenizer& tok, std::ostream& out);

}  // namespace lagserve::trainer
