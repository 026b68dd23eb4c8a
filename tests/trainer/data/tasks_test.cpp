// Synthetic task tests on the default model's tokenizer: prompt lengths within
// kTaskLengthTolerance, answers present (or all digits stated), digit-free
// filler, determinism per seed, and write_task_jsonl read back by load_jsonl.
#include "trainer/data/tasks.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "engine/model/model.h"
#include "trainer/data/example.h"

namespace lagserve::trainer {
namespace {

constexpr Task kTasks[] = {Task::Passkey, Task::MultiKey, Task::Facts};
constexpr int32_t kLengths[] = {256, 1000, 4096};

// The default model's tokenizer, or nullptr when it is not downloaded.
const model::Tokenizer* tokenizer() {
  static const std::unique_ptr<model::Model> m = []() -> std::unique_ptr<model::Model> {
    auto path = model::resolve_model_path("default");
    if (!path.ok() || !std::filesystem::exists(*path)) return nullptr;
    auto loaded = model::load_model(*path, {.weights = false});
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? *std::move(loaded) : nullptr;
  }();
  return m ? m->tokenizer.get() : nullptr;
}

#define REQUIRE_TOKENIZER()                  \
  const model::Tokenizer* tok = tokenizer(); \
  if (tok == nullptr) GTEST_SKIP() << "default model not downloaded"

std::vector<std::string> digit_runs(const std::string& text) {
  std::vector<std::string> runs;
  const std::regex digits("[0-9]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), digits);
       it != std::sregex_iterator(); ++it) {
    runs.push_back(it->str());
  }
  return runs;
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Checks that the prompt states the answer as the task says it does.
void check_answer(Task task, const TaskSample& s) {
  const std::vector<std::string> runs = digit_runs(s.prompt);
  switch (task) {
    case Task::Passkey: {
      EXPECT_TRUE(std::regex_match(s.answer, std::regex("[1-9][0-9]{4}"))) << s.answer;
      EXPECT_EQ(count_of(s.prompt, "The pass key is " + s.answer + ". Remember it. " + s.answer +
                                       " is the pass key."),
                1u);
      // The filler has no digits: the only ones are the key's two mentions.
      EXPECT_EQ(runs, (std::vector<std::string>{s.answer, s.answer}));
      EXPECT_TRUE(s.prompt.ends_with("What is the pass key? The pass key is"));
      break;
    }
    case Task::MultiKey: {
      EXPECT_TRUE(std::regex_match(s.answer, std::regex("[1-9][0-9]{6}"))) << s.answer;
      std::smatch m;
      ASSERT_TRUE(std::regex_search(
          s.prompt, m,
          std::regex("The special magic number for ([a-z]+-[a-z]+) mentioned in the "
                     "provided text is$")));
      const std::string key = m[1];
      EXPECT_EQ(count_of(s.prompt,
                         "One of the special magic numbers for " + key + " is: " + s.answer + "."),
                1u);
      const size_t n_needles = count_of(s.prompt, "One of the special magic numbers for ");
      EXPECT_GE(n_needles, 4u);
      EXPECT_LE(n_needles, 8u);
      EXPECT_EQ(runs.size(), n_needles);
      EXPECT_EQ(std::set<std::string>(runs.begin(), runs.end()).size(), n_needles);
      break;
    }
    case Task::Facts: {
      EXPECT_TRUE(std::regex_match(s.answer, std::regex("[0-9]{4}"))) << s.answer;
      const char* ordinals[] = {"first", "second", "third", "fourth"};
      for (size_t d = 0; d < 4; ++d) {
        EXPECT_EQ(count_of(s.prompt, std::string("The ") + ordinals[d] +
                                         " digit of the vault code is " + s.answer[d] + "."),
                  1u)
            << ordinals[d] << " digit of " << s.answer;
      }
      EXPECT_EQ(runs.size(), 4u);
      break;
    }
  }
}

TEST(Tasks, ParseTask) {
  for (Task task : kTasks) {
    auto parsed = parse_task(task_name(task));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, task);
  }
  EXPECT_EQ(*parse_task("PassKey"), Task::Passkey);
  auto bad = parse_task("needle");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* name : {"needle", "passkey", "multikey", "facts"}) {
    EXPECT_NE(bad.status().message().find(name), std::string::npos) << bad.status();
  }
}

TEST(Tasks, LengthsAnswersAndDeterminism) {
  REQUIRE_TOKENIZER();
  for (Task task : kTasks) {
    for (int32_t length : kLengths) {
      SCOPED_TRACE(std::string(task_name(task)) + " at " + std::to_string(length));
      std::set<std::string> prompts;
      for (uint64_t seed : {1, 2, 3}) {
        std::mt19937_64 rng(seed);
        auto sample = make_task_sample(task, length, *tok, rng);
        ASSERT_TRUE(sample.ok()) << sample.status();
        const auto n_tokens =
            static_cast<int32_t>(tok->encode(sample->prompt, tok->add_bos_default()).size());
        EXPECT_LE(n_tokens, length);
        EXPECT_GE(n_tokens, length - kTaskLengthTolerance);
        check_answer(task, *sample);
        prompts.insert(sample->prompt);

        std::mt19937_64 again(seed);
        auto same = make_task_sample(task, length, *tok, again);
        ASSERT_TRUE(same.ok()) << same.status();
        EXPECT_EQ(same->prompt, sample->prompt);
        EXPECT_EQ(same->answer, sample->answer);
      }
      EXPECT_EQ(prompts.size(), 3u) << "different seeds gave the same sample";
    }
  }
}

TEST(Tasks, FillerIsVariedAndNeedleDepthVaries) {
  REQUIRE_TOKENIZER();
  std::mt19937_64 rng(11);
  double min_depth = 1.0;
  double max_depth = 0.0;
  for (int i = 0; i < 12; ++i) {
    auto sample = make_task_sample(Task::Passkey, 2000, *tok, rng);
    ASSERT_TRUE(sample.ok()) << sample.status();
    const double depth =
        static_cast<double>(sample->prompt.find("The pass key is")) / sample->prompt.size();
    min_depth = std::min(min_depth, depth);
    max_depth = std::max(max_depth, depth);
    if (i == 0) {
      std::set<std::string> distinct;
      size_t n_sentences = 0;
      std::istringstream in(sample->prompt);
      for (std::string sentence; std::getline(in, sentence, '.');) {
        ++n_sentences;
        distinct.insert(sentence);
      }
      EXPECT_GT(n_sentences, 100u);
      EXPECT_GT(distinct.size(), n_sentences * 9 / 10) << "filler repeats itself";
    }
  }
  EXPECT_LT(min_depth, 0.3);
  EXPECT_GT(max_depth, 0.7);
}

TEST(Tasks, LongPromptStaysInRange) {
  REQUIRE_TOKENIZER();
  std::mt19937_64 rng(5);
  auto sample = make_task_sample(Task::MultiKey, 16384, *tok, rng);
  ASSERT_TRUE(sample.ok()) << sample.status();
  const auto n_tokens =
      static_cast<int32_t>(tok->encode(sample->prompt, tok->add_bos_default()).size());
  EXPECT_LE(n_tokens, 16384);
  EXPECT_GE(n_tokens, 16384 - kTaskLengthTolerance);
  check_answer(Task::MultiKey, *sample);
}

TEST(Tasks, TooShortIsInvalidArgument) {
  REQUIRE_TOKENIZER();
  for (Task task : kTasks) {
    std::mt19937_64 rng(1);
    auto sample = make_task_sample(task, 20, *tok, rng);
    ASSERT_FALSE(sample.ok()) << task_name(task);
    EXPECT_EQ(sample.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(sample.status().message().find("too small"), std::string::npos) << sample.status();
  }
}

TEST(Tasks, WriteTaskJsonl) {
  REQUIRE_TOKENIZER();
  for (Task task : kTasks) {
    std::ostringstream out;
    ASSERT_TRUE(write_task_jsonl(task, 300, 5, 77, *tok, out).ok());
    std::istringstream in(out.str());
    int lines = 0;
    for (std::string line; std::getline(in, line);) {
      ++lines;
      const nlohmann::json j = nlohmann::json::parse(line);
      ASSERT_TRUE(j.is_object());
      EXPECT_EQ(j.size(), 2u);
      const std::string completion = j.at("completion").get<std::string>();
      ASSERT_TRUE(completion.starts_with(" "));
      check_answer(task, {j.at("prompt").get<std::string>(), completion.substr(1)});
    }
    EXPECT_EQ(lines, 5);
    std::ostringstream again;
    ASSERT_TRUE(write_task_jsonl(task, 300, 5, 77, *tok, again).ok());
    EXPECT_EQ(again.str(), out.str());
    std::ostringstream other;
    ASSERT_TRUE(write_task_jsonl(task, 300, 5, 78, *tok, other).ok());
    EXPECT_NE(other.str(), out.str());

    // The file trains on the answer and the EOS only.
    const std::string path = testing::TempDir() + "/task.jsonl";
    std::ofstream(path) << out.str();
    auto examples = load_jsonl(path, *tok, nullptr);
    ASSERT_TRUE(examples.ok()) << examples.status();
    ASSERT_EQ(examples->size(), 5u);
    for (const Example& ex : *examples) {
      std::vector<int32_t> trained;
      for (size_t i = 0; i < ex.tokens.size(); ++i) {
        if (ex.target[i]) trained.push_back(ex.tokens[i]);
      }
      ASSERT_FALSE(trained.empty());
      EXPECT_EQ(trained.back(), *tok->eos_id());
      trained.pop_back();
      EXPECT_TRUE(std::regex_match(tok->decode(trained), std::regex(" [0-9]+")));
    }
  }
  std::ostringstream out;
  EXPECT_FALSE(write_task_jsonl(Task::Passkey, 300, -1, 1, *tok, out).ok());
}

}  // namespace
}  // namespace lagserve::trainer
