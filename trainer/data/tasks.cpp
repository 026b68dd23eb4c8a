// The synthetic long-context tasks: each builds its needles, question and
// answer, then fit_haystack (filler.cpp) fits the prompt to the length.
#include "trainer/data/tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <ostream>
#include <vector>

#include "engine/model/tokenizer.h"
#include "trainer/data/filler.h"
#include "trainer/data/random.h"

namespace lagserve::trainer {
namespace {

constexpr const char* kKeyAdjectives[] = {"crimson", "hollow", "brave",  "frozen", "silver",
                                          "wild",    "lucky",  "misty",  "rusty",  "velvet",
                                          "sleepy",  "amber",  "fierce", "tender", "noble"};
constexpr const char* kKeyNouns[] = {"otter",  "lantern", "compass", "violin", "falcon",
                                     "pebble", "cactus",  "thunder", "orchid", "anchor",
                                     "walrus", "tulip",   "comet",   "badger", "harp"};
constexpr const char* kOrdinals[] = {"first", "second", "third", "fourth"};

TaskSample with_prompt(absl::StatusOr<std::string> prompt, std::string answer) {
  return {*std::move(prompt), std::move(answer)};
}

absl::StatusOr<TaskSample> make_passkey(int32_t length_tokens, const model::Tokenizer& tok,
                                        std::mt19937_64& rng) {
  const std::string key = std::to_string(uniform_between(rng, 10000, 99999));
  Haystack h;
  h.intro =
      "There is an important piece of information hidden inside a lot of irrelevant text. Find "
      "it and memorize it. I will quiz you about it afterwards.";
  h.needles = {fmt::format("The pass key is {}. Remember it. {} is the pass key.", key, key)};
  h.question = "What is the pass key? The pass key is";
  absl::StatusOr<std::string> prompt =
      fit_haystack(h, length_tokens, kTaskLengthTolerance, tok, rng);
  if (!prompt.ok()) return prompt.status();
  return with_prompt(std::move(prompt), key);
}

absl::StatusOr<TaskSample> make_multikey(int32_t length_tokens, const model::Tokenizer& tok,
                                         std::mt19937_64& rng) {
  const auto n_needles = static_cast<size_t>(uniform_between(rng, 4, 8));
  std::vector<std::string> keys;
  std::vector<std::string> numbers;
  while (keys.size() < n_needles) {
    std::string key = fmt::format("{}-{}", pick(rng, kKeyAdjectives), pick(rng, kKeyNouns));
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(std::move(key));
  }
  while (numbers.size() < n_needles) {
    std::string number = std::to_string(uniform_between(rng, 1000000, 9999999));
    if (std::find(numbers.begin(), numbers.end(), number) == numbers.end()) {
      numbers.push_back(std::move(number));
    }
  }
  const size_t asked = uniform_below(rng, n_needles);
  Haystack h;
  h.intro =
      "Some special magic numbers are hidden within the following text. Make sure to memorize "
      "them. I will quiz you about the numbers afterwards.";
  for (size_t k = 0; k < n_needles; ++k) {
    h.needles.push_back(
        fmt::format("One of the special magic numbers for {} is: {}.", keys[k], numbers[k]));
  }
  h.question = fmt::format(
      "What is the special magic number for {0} mentioned in the provided text? The special "
      "magic number for {0} mentioned in the provided text is",
      keys[asked]);
  absl::StatusOr<std::string> prompt =
      fit_haystack(h, length_tokens, kTaskLengthTolerance, tok, rng);
  if (!prompt.ok()) return prompt.status();
  return with_prompt(std::move(prompt), numbers[asked]);
}

absl::StatusOr<TaskSample> make_facts(int32_t length_tokens, const model::Tokenizer& tok,
                                      std::mt19937_64& rng) {
  std::string code;
  Haystack h;
  h.intro =
      "The four digits of a vault code are stated one at a time in separate sentences of the "
      "following text. Read carefully and put them together.";
  for (size_t d = 0; d < std::size(kOrdinals); ++d) {
    const char digit = static_cast<char>('0' + uniform_below(rng, 10));
    code += digit;
    h.needles.push_back(fmt::format("The {} digit of the vault code is {}.", kOrdinals[d], digit));
  }
  h.question = "What is the four-digit vault code? The vault code is";
  absl::StatusOr<std::string> prompt =
      fit_haystack(h, length_tokens, kTaskLengthTolerance, tok, rng);
  if (!prompt.ok()) return prompt.status();
  return with_prompt(std::move(prompt), code);
}

}  // namespace

absl::StatusOr<Task> parse_task(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (Task task : {Task::Passkey, Task::MultiKey, Task::Facts}) {
    if (lower == task_name(task)) return task;
  }
  return absl::InvalidArgumentError(
      fmt::format("unknown task '{}' (expected passkey, multikey or facts)", name));
}

std::string_view task_name(Task task) {
  switch (task) {
    case Task::Passkey:
      return "passkey";
    case Task::MultiKey:
      return "multikey";
    case Task::Facts:
      return "facts";
  }
  return "unknown";
}

absl::StatusOr<TaskSample> make_task_sample(Task task, int32_t length_tokens,
                                            const model::Tokenizer& tok, std::mt19937_64& rng) {
  switch (task) {
    case Task::Passkey:
      return make_passkey(length_tokens, tok, rng);
    case Task::MultiKey:
      return make_multikey(length_tokens, tok, rng);
    case Task::Facts:
      return make_facts(length_tokens, tok, rng);
  }
  return absl::InvalidArgumentError("unknown task");
}

absl::Status write_task_jsonl(Task task, int32_t length_tokens, int32_t count, uint64_t seed,
                              const model::Tokenizer& tok, std::ostream& out) {
  if (count < 0) {
    return absl::InvalidArgumentError(fmt::format("sample count must be >= 0, got {}", count));
  }
  std::mt19937_64 rng(seed);
  for (int32_t i = 0; i < count; ++i) {
    absl::StatusOr<TaskSample> sample = make_task_sample(task, length_tokens, tok, rng);
    if (!sample.ok()) {
      return absl::Status(sample.status().code(),
                          fmt::format("{} sample {}: {}", task_name(task), i,
                                      std::string(sample.status().message())));
    }
    nlohmann::ordered_json line;
    line["prompt"] = sample->prompt;
    line["completion"] = " " + sample->answer;
    out << line.dump() << '\n';
    if (!out) {
      return absl::DataLossError(
          fmt::format("{} sample {}: writing the JSONL line failed", task_name(task), i));
    }
  }
  return absl::OkStatus();
}

}  // namespace lagserve::trainer
