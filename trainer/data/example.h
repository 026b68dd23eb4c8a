// Tokenized training examples and the JSONL reader that makes them from plain
// text, prompt/completion pairs and chat conversations.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lagserve::model {
class Tokenizer;
struct ChatTemplate;
struct ChatMessage;
}  // namespace lagserve::model

namespace lagserve::trainer {

// One tokenized training example: target[i] = 1 when the model is trained to
// predict tokens[i] from tokens[0..i). tokens and target have the same size;
// target[0] is always 0 (nothing comes before the first token).
struct Example {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> target;
};

// NOTE: all text is encoded with parse_special = true, as the server encodes
// prompts, so "<|im_end|>" written in the data becomes the special token.

// BOS (when the tokenizer adds one by default) + text + EOS; loss on every
// token after the first. Errors: empty text, a tokenizer without EOS.
absl::StatusOr<Example> example_from_text(const std::string& text, const model::Tokenizer& tok);

// Prompt (with the tokenizer's default BOS) then completion then EOS; loss on
// the completion tokens and the EOS only. The two are tokenized separately
// and concatenated, so the boundary is exact and the completion tokens are
// the ones the model would generate after the prompt.
absl::StatusOr<Example> example_from_prompt_completion(const std::string& prompt,
                                                       const std::string& completion,
                                                       const model::Tokenizer& tok);

// The conversation rendered with the chat template; loss on each assistant
// message's content and its end-of-turn token (ChatML <|im_end|>, Llama-3
// <|eot_id|>), found by rendering prefixes of the conversation. Each
// assistant reply is tokenized apart from what precedes it, exactly as it is
// generated after the assistant header at inference. Tokens after the last
// assistant reply carry no loss and are dropped. Errors: no assistant
// message, a conversation the template does not render incrementally (an
// assistant message first), a reply the template gives no end-of-turn token.
absl::StatusOr<Example> example_from_messages(const std::vector<model::ChatMessage>& messages,
                                              const model::Tokenizer& tok,
                                              const model::ChatTemplate& chat_template);

// Reads JSONL (one JSON object per line; blank lines skipped). Each line is
// exactly one of
//   {"text": "..."}
//   {"prompt": "...", "completion": "..."}
//   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
// made into an Example by the functions above. chat_template may be null;
// then a "messages" line is an error. Any other shape, wrong types, unknown
// keys or invalid JSON: InvalidArgument "path:line: what is wrong"; a file
// that cannot be read: NotFound "path: ...".
absl::StatusOr<std::vector<Example>> load_jsonl(const std::string& path,
                                                const model::Tokenizer& tok,
                                                const model::ChatTemplate* chat_template);

}  // namespace lagserve::trainer
