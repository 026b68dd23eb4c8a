// The engine-free parts of `lagserve eval` (server/eval.h): the compression
// levels, the exact-match score and JSONL task files. The command itself, the
// CSV and the PNG are tested end to end in python/test_eval.py.
#include "server/eval.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace lagserve::cli {
namespace {

TEST(EvalPolicy, OffNxAndSpecs) {
  auto off = parse_eval_policy("off");
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->policy.enabled);
  EXPECT_EQ(off->compression, 1);
  // Nx keeps 1/N of each partition of the default lag (128).
  for (const auto& [spec, keep] : {std::pair{"2x", 64}, {"4x", 32}, {"8x", 16}}) {
    auto p = parse_eval_policy(spec);
    ASSERT_TRUE(p.ok()) << spec;
    EXPECT_TRUE(p->policy.enabled);
    EXPECT_EQ(p->policy.lag, 128);
    EXPECT_EQ(p->policy.keep, keep) << spec;
    EXPECT_EQ(p->compression, 128.0 / keep) << spec;
    EXPECT_EQ(p->name, spec);
  }
  auto spec = parse_eval_policy("sink=4,lag=32,keep=8");
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->policy.sink, 4);
  EXPECT_EQ(spec->compression, 4);
  for (const char* bad : {"0x", "0.5x", "x", "fourx", "lag=0", "sink=-1,ratio=0.5", ""}) {
    auto p = parse_eval_policy(bad);
    EXPECT_FALSE(p.ok()) << bad;
    if (!p.ok()) {
      EXPECT_NE(std::string(p.status().message()).find("policy '"), std::string::npos);
    }
  }
}

TEST(EvalScore, AnswerAtTheStartAndWhole) {
  EXPECT_TRUE(answer_matches("71432", "71432"));
  EXPECT_TRUE(answer_matches(" 71432.", "71432"));
  EXPECT_TRUE(answer_matches("\n 71432 is the key", "71432"));
  EXPECT_FALSE(answer_matches(" 714321", "71432"));   // a longer number
  EXPECT_FALSE(answer_matches(" 7143", "71432"));     // cut short
  EXPECT_FALSE(answer_matches(" It is 71432", "71432"));  // not first
  EXPECT_FALSE(answer_matches(" 71432", ""));
  EXPECT_TRUE(answer_matches(" Paris, France", "Paris"));
  EXPECT_FALSE(answer_matches(" Parisian", "Paris"));
}

std::string write_temp(const std::string& text) {
  char name[] = "/tmp/eval_test_XXXXXX";
  const int fd = mkstemp(name);
  EXPECT_GE(fd, 0);
  std::FILE* f = fdopen(fd, "w");
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return name;
}

TEST(EvalData, ReadsAnswersAndCompletions) {
  const std::string path = write_temp(
      "{\"prompt\": \"The key is 5. The key is\", \"answer\": \"5\"}\n\n"
      "{\"prompt\": \"p2\", \"completion\": \" 1234\\n\"}\n");
  auto items = read_eval_jsonl(path);
  ASSERT_TRUE(items.ok()) << items.status();
  ASSERT_EQ(items->size(), 2u);
  EXPECT_EQ((*items)[0].prompt, "The key is 5. The key is");
  EXPECT_EQ((*items)[0].answer, "5");
  EXPECT_EQ((*items)[1].answer, "1234");  // white space stripped
  std::remove(path.c_str());
}

TEST(EvalData, RejectsWhatIsNotAPromptAnswerFile) {
  EXPECT_FALSE(read_eval_jsonl("/nonexistent/x.jsonl").ok());
  for (const char* text : {"", "\n\n", "not json\n", "{\"prompt\": \"p\"}\n", "{\"answer\": \"a\"}\n",
                           "{\"prompt\": 3, \"answer\": \"a\"}\n", "{\"prompt\": \"p\", \"answer\": \" \"}\n",
                           "[1, 2]\n"}) {
    const std::string path = write_temp(text);
    auto items = read_eval_jsonl(path);
    EXPECT_FALSE(items.ok()) << text;
    if (!items.ok()) {
      EXPECT_NE(std::string(items.status().message()).find(path), std::string::npos);
    }
    std::remove(path.c_str());
  }
}

}  // namespace
}  // namespace lagserve::cli
