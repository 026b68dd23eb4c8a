// Chat templates rendered natively: recognise ChatML / Llama-3 from the Jinja
// text, pull out a default system prompt written there as a literal, and
// produce exactly what the Jinja template would.
#include "engine/model/chat_template.h"

#include "engine/model/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <iterator>

#include "absl/status/status.h"
#include <fmt/format.h>


namespace lagserve::model {
namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kHeaderStart = "<|start_header_id|>";
constexpr std::string_view kHeaderEnd = "<|end_header_id|>";
constexpr std::string_view kEotId = "<|eot_id|>";
constexpr std::string_view kBeginOfText = "<|begin_of_text|>";

// Python's str.isspace() for one code point (Jinja's `trim` is str.strip()).
bool python_space(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 ||
         cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Decodes the code point starting at s[i] (s is UTF-8; invalid bytes count as
// themselves) and returns its length.
size_t code_point_at(std::string_view s, size_t i, char32_t& cp) {
  const auto b = static_cast<unsigned char>(s[i]);
  size_t len = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
  if (i + len > s.size()) len = 1;
  cp = len == 1 ? b : (b & (0x7F >> len));
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return len;
}

std::string_view python_strip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    char32_t cp;
    const size_t len = code_point_at(s, begin, cp);
    if (!python_space(cp)) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    char32_t cp;
    if (code_point_at(s, start, cp) != end - start || !python_space(cp)) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

// Undoes the escapes of a Jinja string literal (\n, \t, \\, \', \").
std::string unescape_jinja(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out.push_back(s[i]);
      continue;
    }
    const char c = s[++i];
    out.push_back(c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c);
  }
  return out;
}

// Looks for `open` + `separator` + literal text + `close` inside one Jinja
// string literal, e.g. '<|im_start|>system\nYou are ...<|im_end|>\n'. The
// separator may be written as a real newline or as the escape "\n". Text
// that leaves the literal (quotes, `+`, `{{`) means the prompt is computed,
// not a default.
std::optional<std::string> literal_system_prompt(std::string_view jinja, std::string_view open,
                                                 std::string_view separator,
                                                 std::string_view close) {
  std::string escaped_separator;
  for (char c : separator) escaped_separator += c == '\n' ? std::string("\\n") : std::string(1, c);
  for (size_t at = jinja.find(open); at != std::string_view::npos;
       at = jinja.find(open, at + 1)) {
    std::string_view rest = jinja.substr(at + open.size());
    if (rest.starts_with(separator)) {
      rest.remove_prefix(separator.size());
    } else if (rest.starts_with(escaped_separator)) {
      rest.remove_prefix(escaped_separator.size());
    } else {
      continue;
    }
    const size_t end = rest.find(close);
    if (end == std::string_view::npos || end == 0) continue;
    const std::string_view body = rest.substr(0, end);
    if (body.find_first_of("'\"{}+") != std::string_view::npos) continue;
    return unescape_jinja(body);
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<ChatFormat> parse_chat_format(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "chatml") return ChatFormat::ChatML;
  if (lower == "llama3" || lower == "llama-3") return ChatFormat::Llama3;
  return absl::InvalidArgumentError(
      fmt::format("unknown chat template '{}' (expected chatml or llama3)", name));
}

absl::StatusOr<ChatTemplate> detect_chat_template(std::string_view jinja_text,
                                                  std::optional<ChatFormat> override_format) {
  ChatTemplate tmpl;
  if (override_format) {
    tmpl.format = *override_format;
  } else if (jinja_text.find(kImStart) != std::string_view::npos) {
    tmpl.format = ChatFormat::ChatML;
  } else if (jinja_text.find(kHeaderStart) != std::string_view::npos) {
    tmpl.format = ChatFormat::Llama3;
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "{}; pass --chat-template chatml|llama3 to choose one",
        jinja_text.empty() ? "the model has no chat template"
                           : "the model's chat template is not one lagserve knows (ChatML or "
                             "Llama-3)"));
  }
  tmpl.default_system = literal_system_prompt(
      jinja_text, fmt::format("{}system", kImStart), "\n", kImEnd);
  if (!tmpl.default_system) {
    tmpl.default_system = literal_system_prompt(
        jinja_text, fmt::format("{}system{}", kHeaderStart, kHeaderEnd), "\n\n", kEotId);
  }
  if (tmpl.format == ChatFormat::Llama3) tmpl.bos_text = std::string(kBeginOfText);
  return tmpl;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt) const {
  // The default system prompt goes in when the first message is not a system
  // message (an empty conversation gets none, as in SmolLM2's template).
  std::vector<const ChatMessage*> turns;
  ChatMessage default_message{"system", default_system.value_or("")};
  if (default_system && !messages.empty() && messages.front().role != "system") {
    turns.push_back(&default_message);
  }
  for (const ChatMessage& m : messages) turns.push_back(&m);

  std::string out;
  switch (format) {
    case ChatFormat::ChatML:
      // {{'<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n'}}
      for (const ChatMessage* m : turns) {
        fmt::format_to(std::back_inserter(out), "{}{}\n{}{}\n", kImStart, m->role, m->content,
                       kImEnd);
      }
      if (add_generation_prompt) fmt::format_to(std::back_inserter(out), "{}assistant\n", kImStart);
      break;
    case ChatFormat::Llama3:
      // bos_token on the first message; content | trim.
      for (size_t i = 0; i < turns.size(); ++i) {
        if (i == 0) out += bos_text;
        fmt::format_to(std::back_inserter(out), "{}{}{}\n\n{}{}", kHeaderStart, turns[i]->role,
                       kHeaderEnd, python_strip(turns[i]->content), kEotId);
      }
      if (add_generation_prompt) {
        fmt::format_to(std::back_inserter(out), "{}assistant{}\n\n", kHeaderStart, kHeaderEnd);
      }
      break;
  }
  return out;
}

std::vector<int32_t> ChatTemplate::encode(const Tokenizer& tokenizer,
                                          const std::vector<ChatMessage>& messages,
                                          std::optional<bool> add_special) const {
  return tokenizer.encode(render(messages, /*add_generation_prompt=*/true),
                          add_special.value_or(tokenizer.add_bos_default() && bos_text.empty()));
}

}  // namespace lagserve::model
