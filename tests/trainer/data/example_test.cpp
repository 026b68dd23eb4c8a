// load_jsonl tests: each line shape on the tiny-llama tokenizer and on the
// default model (SmolLM2, ChatML), target flags checked by decoding, and the
// error for every kind of bad line (with its line number).
#include "trainer/data/example.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "engine/model/chat_template.h"
#include "engine/model/model.h"

namespace lagserve::trainer {
namespace {

using model::ChatMessage;

struct Loaded {
  std::unique_ptr<model::Model> model;
  std::optional<model::ChatTemplate> chat_template;
};

Loaded load(const std::string& path) {
  Loaded out;
  auto m = model::load_model(path, {.weights = false});
  EXPECT_TRUE(m.ok()) << m.status();
  if (!m.ok()) return out;
  out.model = *std::move(m);
  auto tmpl = model::detect_chat_template(out.model->chat_template, std::nullopt);
  if (tmpl.ok()) out.chat_template = *tmpl;
  return out;
}

const Loaded& tiny() {
  static const Loaded loaded =
      load(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/models/tiny-llama");
  return loaded;
}

// The default model, or nullptr when it is not downloaded.
const Loaded* smollm() {
  static const std::optional<Loaded> loaded = []() -> std::optional<Loaded> {
    auto path = model::resolve_model_path("default");
    if (!path.ok() || !std::filesystem::exists(*path)) return std::nullopt;
    return load(*path);
  }();
  return loaded ? &*loaded : nullptr;
}

std::string write_file(const std::string& name, const std::string& contents) {
  const std::string path = testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

// Each maximal run of target = 1, decoded.
std::vector<std::string> target_runs(const Example& ex, const model::Tokenizer& tok) {
  std::vector<std::string> runs;
  for (size_t i = 0; i < ex.tokens.size();) {
    if (!ex.target[i]) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < ex.tokens.size() && ex.target[end]) ++end;
    runs.push_back(tok.decode(std::span(ex.tokens).subspan(i, end - i)));
    i = end;
  }
  return runs;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void check_text_and_prompt_completion(const Loaded& m) {
  const model::Tokenizer& tok = *m.model->tokenizer;
  ASSERT_TRUE(tok.eos_id().has_value());
  const int32_t eos = *tok.eos_id();
  const std::string path = write_file(
      "shapes.jsonl",
      "{\"text\": \"Hello world, this is a test.\"}\n"
      "\n"
      "  \n"
      "{\"prompt\": \"Question: what is two plus two?\", \"completion\": \" Four.\"}\r\n");
  auto examples = load_jsonl(path, tok, nullptr);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 2u);

  const Example& text = (*examples)[0];
  EXPECT_EQ(text.tokens,
            concat(tok.encode("Hello world, this is a test.", tok.add_bos_default()), {eos}));
  ASSERT_EQ(text.target.size(), text.tokens.size());
  EXPECT_EQ(text.target[0], 0);
  for (size_t i = 1; i < text.target.size(); ++i) EXPECT_EQ(text.target[i], 1) << i;
  if (tok.add_bos_default()) {
    EXPECT_EQ(text.tokens[0], *tok.bos_id());
  }

  const Example& pc = (*examples)[1];
  const auto prompt = tok.encode("Question: what is two plus two?", tok.add_bos_default());
  const auto completion = tok.encode(" Four.", false);
  EXPECT_EQ(pc.tokens, concat(concat(prompt, completion), {eos}));
  ASSERT_EQ(pc.target.size(), pc.tokens.size());
  for (size_t i = 0; i < pc.target.size(); ++i) {
    EXPECT_EQ(pc.target[i], i < prompt.size() ? 0 : 1) << i;
  }
  EXPECT_EQ(target_runs(pc, tok),
            std::vector<std::string>{" Four." + tok.decode(std::vector<int32_t>{eos})});
}

void check_messages(const Loaded& m, const std::string& end_of_turn) {
  ASSERT_TRUE(m.chat_template.has_value());
  const model::Tokenizer& tok = *m.model->tokenizer;
  const std::string path = write_file(
      "messages.jsonl", R"({"messages": [{"role": "system", "content": "You are terse."},)"
                        R"( {"role": "user", "content": "Name a colour."},)"
                        R"( {"role": "assistant", "content": "Blue, like the sea."},)"
                        R"( {"role": "user", "content": "Another?"},)"
                        R"( {"role": "assistant", "content": " Red\nand green "},)"
                        R"( {"role": "user", "content": "Thanks"}]})"
                        "\n"
                        R"({"messages": [{"role": "user", "content": "Hi"},)"
                        R"( {"role": "assistant", "content": "Hello!"}]})"
                        "\n");
  auto examples = load_jsonl(path, tok, &*m.chat_template);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 2u);

  const Example& ex = (*examples)[0];
  ASSERT_EQ(ex.target.size(), ex.tokens.size());
  EXPECT_EQ(target_runs(ex, tok), (std::vector<std::string>{"Blue, like the sea." + end_of_turn,
                                                            " Red\nand green " + end_of_turn}));
  // The tokens are the whole rendering up to the last reply's end-of-turn.
  const std::vector<ChatMessage> messages = {{"system", "You are terse."},
                                             {"user", "Name a colour."},
                                             {"assistant", "Blue, like the sea."},
                                             {"user", "Another?"},
                                             {"assistant", " Red\nand green "}};
  std::string rendered = m.chat_template->render(messages, false);
  rendered = rendered.substr(0, rendered.rfind(end_of_turn) + end_of_turn.size());
  EXPECT_EQ(
      tok.decode(ex.tokens),
      (tok.add_bos_default() ? tok.decode(std::vector<int32_t>{*tok.bos_id()}) : "") + rendered);
  EXPECT_EQ(ex.target.back(), 1);

  const Example& second = (*examples)[1];
  EXPECT_EQ(target_runs(second, tok), std::vector<std::string>{"Hello!" + end_of_turn});
  // Everything before the reply is what the server would prompt with.
  const std::vector<int32_t> prompt = m.chat_template->encode(tok, {{"user", "Hi"}});
  ASSERT_GT(second.tokens.size(), prompt.size());
  EXPECT_EQ(std::vector<int32_t>(second.tokens.begin(), second.tokens.begin() + prompt.size()),
            prompt);
  EXPECT_EQ(second.target[prompt.size() - 1], 0);
  EXPECT_EQ(second.target[prompt.size()], 1);
}

TEST(LoadJsonl, TextAndPromptCompletionTiny) { check_text_and_prompt_completion(tiny()); }

TEST(LoadJsonl, TextAndPromptCompletionDefaultModel) {
  if (smollm() == nullptr) GTEST_SKIP() << "default model not downloaded";
  check_text_and_prompt_completion(*smollm());
}

TEST(LoadJsonl, MessagesTiny) { check_messages(tiny(), "<|im_end|>"); }

TEST(LoadJsonl, MessagesDefaultModel) {
  if (smollm() == nullptr) GTEST_SKIP() << "default model not downloaded";
  // SmolLM2's template inserts its default system prompt; it carries no loss.
  check_messages(*smollm(), "<|im_end|>");
  const Loaded& m = *smollm();
  auto ex = example_from_messages({{"user", "Hi"}, {"assistant", "Hey"}}, *m.model->tokenizer,
                                  *m.chat_template);
  ASSERT_TRUE(ex.ok()) << ex.status();
  EXPECT_NE(m.model->tokenizer->decode(ex->tokens).find("You are a helpful AI assistant"),
            std::string::npos);
  EXPECT_EQ(target_runs(*ex, *m.model->tokenizer), std::vector<std::string>{"Hey<|im_end|>"});
}

TEST(LoadJsonl, AssistantFirstWithDefaultSystemIsAnError) {
  if (smollm() == nullptr) GTEST_SKIP() << "default model not downloaded";
  const Loaded& m = *smollm();
  auto ex = example_from_messages({{"assistant", "Hello"}, {"user", "Hi"}, {"assistant", "Hey"}},
                                  *m.model->tokenizer, *m.chat_template);
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.status().message().find("messages[0]"), std::string::npos) << ex.status();
}

TEST(LoadJsonl, MessagesWithoutChatTemplate) {
  const std::string path =
      write_file("no_template.jsonl",
                 "{\"text\": \"a\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, "
                 "{\"role\": \"assistant\", \"content\": \"Yo\"}]}\n");
  auto examples = load_jsonl(path, *tiny().model->tokenizer, nullptr);
  ASSERT_FALSE(examples.ok());
  EXPECT_NE(examples.status().message().find(path + ":2: "), std::string::npos)
      << examples.status();
  EXPECT_NE(examples.status().message().find("chat template"), std::string::npos)
      << examples.status();
}

TEST(LoadJsonl, BadLinesNameFileLineAndProblem) {
  const struct {
    std::string line;
    std::string expected;
  } cases[] = {
      {"{\"text\": \"unterminated}", "invalid JSON"},
      {"[1, 2]", "expected a JSON object, got array"},
      {"\"just a string\"", "expected a JSON object, got string"},
      {"{}", "empty object"},
      {"{\"text\": \"a\", \"extra\": 1}", "unknown key \"extra\""},
      {"{\"txt\": \"a\"}", "unknown key \"txt\""},
      {"{\"text\": 5}", "\"text\" must be a string, got number"},
      {"{\"text\": \"\"}", "\"text\" is empty"},
      {"{\"prompt\": \"a\"}", "\"prompt\" without \"completion\""},
      {"{\"completion\": \"a\"}", "\"completion\" without \"prompt\""},
      {"{\"prompt\": \"a\", \"completion\": null}", "\"completion\" must be a string, got null"},
      {"{\"text\": \"a\", \"prompt\": \"b\"}", "cannot be combined"},
      {"{\"messages\": \"hi\"}", "\"messages\" must be an array, got string"},
      {"{\"messages\": []}", "\"messages\" is empty"},
      {"{\"messages\": [5]}", "messages[0] must be an object"},
      {"{\"messages\": [{\"role\": \"user\"}]}", "messages[0] has no \"content\""},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\", \"name\": \"x\"}]}",
       "messages[0]: unknown key \"name\""},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", "
       "\"content\": \"b\"}]}",
       "messages[1].role is \"bot\""},
      {"{\"messages\": [{\"role\": \"user\", \"content\": 3}]}",
       "messages[0].content must be a string, got number"},
      {"{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", "no assistant message"},
  };
  const Loaded& m = tiny();
  ASSERT_TRUE(m.chat_template.has_value());
  for (const auto& c : cases) {
    const std::string path =
        write_file("bad.jsonl", "{\"text\": \"fine\"}\n\n" + c.line + "\n{\"text\": \"fine\"}\n");
    auto examples = load_jsonl(path, *m.model->tokenizer, &*m.chat_template);
    ASSERT_FALSE(examples.ok()) << c.line;
    EXPECT_EQ(examples.status().code(), absl::StatusCode::kInvalidArgument) << c.line;
    const std::string message(examples.status().message());
    EXPECT_TRUE(message.starts_with(path + ":3: ")) << c.line << " -> " << message;
    EXPECT_NE(message.find(c.expected), std::string::npos) << c.line << " -> " << message;
  }
}

TEST(LoadJsonl, MissingFileIsNotFound) {
  auto examples = load_jsonl("/nonexistent/data.jsonl", *tiny().model->tokenizer, nullptr);
  ASSERT_FALSE(examples.ok());
  EXPECT_EQ(examples.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(examples.status().message().find("/nonexistent/data.jsonl"), std::string::npos);
}

TEST(LoadJsonl, EmptyFileGivesNoExamples) {
  auto examples = load_jsonl(write_file("empty.jsonl", "\n\n"), *tiny().model->tokenizer, nullptr);
  ASSERT_TRUE(examples.ok()) << examples.status();
  EXPECT_TRUE(examples->empty());
}

}  // namespace
}  // namespace lagserve::trainer
