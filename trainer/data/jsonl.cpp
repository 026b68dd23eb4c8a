// load_jsonl: validates each JSONL line's shape and types, then tokenizes it
// with example.cpp; every error names the file and line.
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/status/status.h"
#include "engine/model/chat_template.h"
#include "engine/model/tokenizer.h"
#include "trainer/data/example.h"

namespace lagserve::trainer {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kShapes =
    "a line is {\"text\"}, {\"prompt\", \"completion\"} or {\"messages\"}";

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

absl::StatusOr<std::string> string_field(const Json& object, const std::string& key) {
  const Json& value = object.at(key);
  if (!value.is_string()) {
    return absl::InvalidArgumentError(
        fmt::format("\"{}\" must be a string, got {}", key, value.type_name()));
  }
  return value.get<std::string>();
}

absl::StatusOr<std::vector<model::ChatMessage>> parse_messages(const Json& value) {
  if (!value.is_array()) {
    return absl::InvalidArgumentError(
        fmt::format("\"messages\" must be an array, got {}", value.type_name()));
  }
  if (value.empty()) return absl::InvalidArgumentError("\"messages\" is empty");
  std::vector<model::ChatMessage> messages;
  for (size_t i = 0; i < value.size(); ++i) {
    const Json& m = value[i];
    if (!m.is_object()) {
      return absl::InvalidArgumentError(
          fmt::format("messages[{}] must be an object, got {}", i, m.type_name()));
    }
    for (const auto& [key, unused] : m.items()) {
      if (key != "role" && key != "content") {
        return absl::InvalidArgumentError(fmt::format(
            "messages[{}]: unknown key \"{}\" (expected \"role\" and \"content\")", i, key));
      }
    }
    model::ChatMessage message;
    for (const char* key : {"role", "content"}) {
      if (!m.contains(key)) {
        return absl::InvalidArgumentError(fmt::format("messages[{}] has no \"{}\"", i, key));
      }
      if (!m[key].is_string()) {
        return absl::InvalidArgumentError(
            fmt::format("messages[{}].{} must be a string, got {}", i, key, m[key].type_name()));
      }
    }
    message.role = m["role"].get<std::string>();
    message.content = m["content"].get<std::string>();
    if (message.role != "system" && message.role != "user" && message.role != "assistant") {
      return absl::InvalidArgumentError(fmt::format(
          "messages[{}].role is \"{}\" (expected \"system\", \"user\" or \"assistant\")", i,
          message.role));
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

// One parsed line to an Example; errors without the location prefix.
absl::StatusOr<Example> example_from_json(const Json& j, const model::Tokenizer& tok,
                                          const model::ChatTemplate* chat_template) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        fmt::format("expected a JSON object, got {}; {}", j.type_name(), kShapes));
  }
  std::set<std::string> keys;
  for (const auto& [key, unused] : j.items()) {
    if (key != "text" && key != "prompt" && key != "completion" && key != "messages") {
      return absl::InvalidArgumentError(fmt::format("unknown key \"{}\"; {}", key, kShapes));
    }
    keys.insert(key);
  }
  if (keys == std::set<std::string>{"text"}) {
    absl::StatusOr<std::string> text = string_field(j, "text");
    if (!text.ok()) return text.status();
    return example_from_text(*text, tok);
  }
  if (keys == std::set<std::string>{"completion", "prompt"}) {
    absl::StatusOr<std::string> prompt = string_field(j, "prompt");
    if (!prompt.ok()) return prompt.status();
    absl::StatusOr<std::string> completion = string_field(j, "completion");
    if (!completion.ok()) return completion.status();
    return example_from_prompt_completion(*prompt, *completion, tok);
  }
  if (keys == std::set<std::string>{"messages"}) {
    absl::StatusOr<std::vector<model::ChatMessage>> messages = parse_messages(j["messages"]);
    if (!messages.ok()) return messages.status();
    if (chat_template == nullptr) {
      return absl::FailedPreconditionError(
          "a \"messages\" line needs a chat template, and the model has none (pass one with "
          "--chat-template chatml|llama3)");
    }
    return example_from_messages(*messages, tok, *chat_template);
  }
  if (keys.empty()) return absl::InvalidArgumentError(fmt::format("empty object; {}", kShapes));
  if (keys.size() == 1 && (keys.contains("prompt") || keys.contains("completion"))) {
    return absl::InvalidArgumentError(
        fmt::format("\"{}\" without \"{}\"", keys.contains("prompt") ? "prompt" : "completion",
                    keys.contains("prompt") ? "completion" : "prompt"));
  }
  std::string listed;
  for (const std::string& key : keys)
    listed += fmt::format("{}\"{}\"", listed.empty() ? "" : ", ", key);
  return absl::InvalidArgumentError(fmt::format("keys {} cannot be combined; {}", listed, kShapes));
}

}  // namespace

absl::StatusOr<std::vector<Example>> load_jsonl(const std::string& path,
                                                const model::Tokenizer& tok,
                                                const model::ChatTemplate* chat_template) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open the file", path));
  std::vector<Example> examples;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (is_blank(line)) continue;
    Json j;
    try {
      j = Json::parse(line);
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(
          fmt::format("{}:{}: invalid JSON: {}", path, line_no, e.what()));
    }
    absl::StatusOr<Example> ex = example_from_json(j, tok, chat_template);
    if (!ex.ok()) {
      return absl::Status(ex.status().code(), fmt::format("{}:{}: {}", path, line_no,
                                                          std::string(ex.status().message())));
    }
    examples.push_back(*std::move(ex));
  }
  if (in.bad()) return absl::DataLossError(fmt::format("{}:{}: read error", path, line_no + 1));
  return examples;
}

}  // namespace lagserve::trainer
