// Chat templates: ChatML (SmolLM2, Qwen2.5) and Llama-3, recognised from the
// Jinja template text that a model ships; rendered natively (no Jinja engine).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class ChatFormat { ChatML, Llama3 };

struct ChatTemplate {
  ChatFormat format = ChatFormat::ChatML;
  // System prompt the template inserts when the conversation has none
  // (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging
  // Face"; Qwen2.5: "You are Qwen, created by Alibaba Cloud. ...").
  std::optional<std::string> default_system;
  std::string bos_text;  // prepended by the template (Llama-3: "<|begin_of_text|>")

  // Renders messages exactly as the model's Jinja template does, ending with
  // the assistant header when add_generation_prompt is true.
  std::string render(const std::vector<ChatMessage>& messages,
                     bool add_generation_prompt) const;
  // Token ids of the rendered conversation, ending with the assistant header.
  // BOS follows the tokenizer's default unless the template writes it itself
  // (Llama-3); add_special, when set, decides instead.
  std::vector<int32_t> encode(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                              std::optional<bool> add_special = {}) const;
};

// Parses "chatml" or "llama3"; InvalidArgument otherwise.
absl::StatusOr<ChatFormat> parse_chat_format(std::string_view name);

// Recognises the template from its Jinja text. `override_format`, when set,
// wins (the default system prompt is still taken from the text when it has
// one). An unrecognised template without override is InvalidArgument with a
// message that suggests --chat-template chatml|llama3.
absl::StatusOr<ChatTemplate> detect_chat_template(
    std::string_view jinja_text, std::optional<ChatFormat> override_format);

}  // namespace lagserve::model
