// Builds tokenized training examples (tokens + loss targets) from text,
// prompt/completion pairs and chat conversations.
#include "trainer/data/example.h"

#include <fmt/format.h>

#include <algorithm>

#include "absl/status/status.h"
#include "engine/model/chat_template.h"
#include "engine/model/tokenizer.h"

namespace lagserve::trainer {
namespace {

void append(Example& ex, const std::vector<int32_t>& tokens, uint8_t target) {
  ex.tokens.insert(ex.tokens.end(), tokens.begin(), tokens.end());
  ex.target.insert(ex.target.end(), tokens.size(), target);
}

absl::StatusOr<int32_t> eos_of(const model::Tokenizer& tok) {
  if (!tok.eos_id()) {
    return absl::FailedPreconditionError("the tokenizer has no EOS token to end the example with");
  }
  return *tok.eos_id();
}

// Nothing predicts the first token, whatever the shape said.
Example finish(Example ex) {
  if (!ex.target.empty()) ex.target[0] = 0;
  return ex;
}

}  // namespace

absl::StatusOr<Example> example_from_text(const std::string& text, const model::Tokenizer& tok) {
  if (text.empty()) return absl::InvalidArgumentError("\"text\" is empty");
  const absl::StatusOr<int32_t> eos = eos_of(tok);
  if (!eos.ok()) return eos.status();
  Example ex;
  append(ex, tok.encode(text, tok.add_bos_default()), 1);
  append(ex, {*eos}, 1);
  return finish(std::move(ex));
}

absl::StatusOr<Example> example_from_prompt_completion(const std::string& prompt,
                                                       const std::string& completion,
                                                       const model::Tokenizer& tok) {
  const absl::StatusOr<int32_t> eos = eos_of(tok);
  if (!eos.ok()) return eos.status();
  Example ex;
  append(ex, tok.encode(prompt, tok.add_bos_default()), 0);
  append(ex, tok.encode(completion, /*add_bos=*/false), 1);
  append(ex, {*eos}, 1);
  return finish(std::move(ex));
}

absl::StatusOr<Example> example_from_messages(const std::vector<model::ChatMessage>& messages,
                                              const model::Tokenizer& tok,
                                              const model::ChatTemplate& chat_template) {
  const auto is_assistant = [](const model::ChatMessage& m) { return m.role == "assistant"; };
  const auto last = std::find_if(messages.rbegin(), messages.rend(), is_assistant);
  if (last == messages.rend()) {
    return absl::InvalidArgumentError("\"messages\" has no assistant message to train on");
  }
  const size_t n_used = static_cast<size_t>(messages.rend() - last);
  const std::vector<int32_t> stop_ids = tok.stop_ids();
  // BOS as ChatTemplate::encode gives it: the template writes it itself (Llama-3)
  // or the tokenizer adds it by default.
  const bool add_bos = tok.add_bos_default() && chat_template.bos_text.empty();

  Example ex;
  std::string done;  // rendered text that ex.tokens already covers
  std::vector<model::ChatMessage> prefix;
  for (size_t i = 0; i < n_used; ++i) {
    if (!is_assistant(messages[i])) {
      prefix.push_back(messages[i]);
      continue;
    }
    const std::string before = chat_template.render(prefix, /*add_generation_prompt=*/true);
    prefix.push_back(messages[i]);
    const std::string with_reply = chat_template.render(prefix, /*add_generation_prompt=*/false);
    if (!before.starts_with(done) || !with_reply.starts_with(before)) {
      return absl::InvalidArgumentError(fmt::format(
          "messages[{}]: the chat template does not render the conversation up to this assistant "
          "reply as a continuation of what comes before it (does an assistant message come "
          "first?)",
          i));
    }
    append(ex,
           tok.encode(std::string_view(before).substr(done.size()), ex.tokens.empty() && add_bos),
           0);
    const std::vector<int32_t> reply =
        tok.encode(std::string_view(with_reply).substr(before.size()), /*add_bos=*/false);
    // The reply is trained up to and including its last end-of-turn token;
    // what the template writes after it ("\n" in ChatML) is context.
    size_t n_trained = reply.size();
    while (n_trained > 0 &&
           std::find(stop_ids.begin(), stop_ids.end(), reply[n_trained - 1]) == stop_ids.end()) {
      --n_trained;
    }
    if (n_trained == 0) {
      return absl::InvalidArgumentError(fmt::format(
          "messages[{}]: the chat template ends this assistant reply with no end-of-turn token",
          i));
    }
    ex.tokens.insert(ex.tokens.end(), reply.begin(), reply.end());
    ex.target.insert(ex.target.end(), n_trained, 1);
    ex.target.insert(ex.target.end(), reply.size() - n_trained, 0);
    done = with_reply;
  }
  // Tokens after the last trained one carry no loss: drop them.
  while (!ex.target.empty() && ex.target.back() == 0) {
    ex.target.pop_back();
    ex.tokens.pop_back();
  }
  return finish(std::move(ex));
}

}  // namespace lagserve::trainer
