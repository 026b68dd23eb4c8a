// Chat template tests: native renderings against jinja2 renderings of the
// SmolLM2 (from the GGUF), Llama-3 and Qwen2.5 templates
// (tests/golden/make_tokenizer_golden.py), detection, overrides and errors.
#include "engine/model/chat_template.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model/gguf.h"

namespace lagserve::model {
namespace {

using Json = nlohmann::json;

const Json& golden() {
  static const Json j = [] {
    std::ifstream in(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/tokenizer/chat_golden.json");
    EXPECT_TRUE(in.good());
    return Json::parse(in);
  }();
  return j;
}

std::vector<ChatMessage> messages_of(const Json& j) {
  std::vector<ChatMessage> out;
  for (const Json& m : j) {
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

TEST(ChatTemplate, RendersLikeJinja) {
  const Json& g = golden();
  ASSERT_GE(g["cases"].size(), 60u);
  for (const Json& c : g["cases"]) {
    const std::string name = c["template"];
    auto tmpl = detect_chat_template(g["templates"][name].get<std::string>(), std::nullopt);
    ASSERT_TRUE(tmpl.ok()) << name << ": " << tmpl.status();
    const std::string rendered =
        tmpl->render(messages_of(c["messages"]), c["add_generation_prompt"].get<bool>());
    EXPECT_EQ(rendered, c["rendered"].get<std::string>())
        << name << " on " << c["messages"].dump()
        << " add_generation_prompt=" << c["add_generation_prompt"];
  }
}

TEST(ChatTemplate, DetectsFormatAndDefaultSystem) {
  const Json& t = golden()["templates"];
  auto smollm = detect_chat_template(t["smollm2"].get<std::string>(), std::nullopt);
  ASSERT_TRUE(smollm.ok());
  EXPECT_EQ(smollm->format, ChatFormat::ChatML);
  EXPECT_EQ(smollm->default_system,
            std::optional<std::string>(
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face"));
  EXPECT_EQ(smollm->bos_text, "");

  auto qwen = detect_chat_template(t["qwen25"].get<std::string>(), std::nullopt);
  ASSERT_TRUE(qwen.ok());
  EXPECT_EQ(qwen->format, ChatFormat::ChatML);
  EXPECT_EQ(qwen->default_system,
            std::optional<std::string>(
                "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."));

  auto llama = detect_chat_template(t["llama3"].get<std::string>(), std::nullopt);
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(llama->format, ChatFormat::Llama3);
  EXPECT_EQ(llama->default_system, std::nullopt);
  EXPECT_EQ(llama->bos_text, "<|begin_of_text|>");
}

TEST(ChatTemplate, TemplateFromTheGguf) {
  const char* home = std::getenv("HOME");
  const std::string path = std::string(home ? home : "") +
                           "/.cache/lagserve/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no model at " << path;
  auto gguf = GgufFile::open(path);
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto text = (*gguf)->get_string("tokenizer.chat_template");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, golden()["templates"]["smollm2"].get<std::string>());
}

TEST(ChatTemplate, UnknownTemplateAsksForTheFlag) {
  for (std::string_view text : {"{{ messages[0]['content'] }}", ""}) {
    auto tmpl = detect_chat_template(text, std::nullopt);
    ASSERT_FALSE(tmpl.ok());
    EXPECT_EQ(tmpl.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(tmpl.status().message()).find("--chat-template"), std::string::npos)
        << tmpl.status();
  }
}

TEST(ChatTemplate, OverrideWins) {
  const std::vector<ChatMessage> messages = {{"user", " Hi "}};
  auto forced = detect_chat_template("{{ messages[0]['content'] }}", ChatFormat::Llama3);
  ASSERT_TRUE(forced.ok());
  EXPECT_EQ(forced->render(messages, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");

  // Forcing ChatML on SmolLM2's template keeps its default system prompt;
  // forcing Llama-3 on it renders that prompt in Llama-3 form.
  const std::string smollm = golden()["templates"]["smollm2"];
  auto chatml = detect_chat_template(smollm, ChatFormat::ChatML);
  ASSERT_TRUE(chatml.ok());
  EXPECT_TRUE(chatml->default_system.has_value());
  auto llama = detect_chat_template(smollm, ChatFormat::Llama3);
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(llama->format, ChatFormat::Llama3);
  EXPECT_EQ(llama->render(messages, false),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
            "AI assistant named SmolLM, trained by Hugging Face<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplate, ParsesFormatNames) {
  EXPECT_EQ(parse_chat_format("chatml").value(), ChatFormat::ChatML);
  EXPECT_EQ(parse_chat_format("ChatML").value(), ChatFormat::ChatML);
  EXPECT_EQ(parse_chat_format("llama3").value(), ChatFormat::Llama3);
  EXPECT_EQ(parse_chat_format("llama-3").value(), ChatFormat::Llama3);
  auto bad = parse_chat_format("vicuna");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("vicuna"), std::string::npos);
}

}  // namespace
}  // namespace lagserve::model
