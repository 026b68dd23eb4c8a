// OutputStream: per-token stop checks and held-back streaming text.
#include "engine/runtime/stop_checker.h"

#include <algorithm>

#include <fmt/format.h>

#include "engine/common/check.h"
#include "engine/model/unicode_bytes.h"

namespace lagserve::runtime {

absl::Status validate(const StopParams& p, int32_t vocab_size) {
  if (p.max_tokens < 1) {
    return absl::InvalidArgumentError(fmt::format("max_tokens must be >= 1, got {}", p.max_tokens));
  }
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) {
    return absl::InvalidArgumentError(fmt::format(
        "min_tokens must be in [0, max_tokens = {}], got {}", p.max_tokens, p.min_tokens));
  }
  for (const std::string& s : p.stop) {
    if (s.empty()) return absl::InvalidArgumentError("stop: empty stop string");
    if (!model::utf8_is_valid(s)) {
      return absl::InvalidArgumentError("stop: stop string is not valid UTF-8");
    }
  }
  for (int32_t id : p.stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(fmt::format(
          "stop_token_ids: token id {} is outside the vocabulary [0, {})", id, vocab_size));
    }
  }
  return absl::OkStatus();
}

OutputStream::OutputStream(const model::Tokenizer& tokenizer, StopParams params,
                           std::vector<int32_t> eos_ids)
    : tokenizer_(tokenizer),
      params_(std::move(params)),
      eos_ids_(std::move(eos_ids)),
      decoder_(tokenizer_, params_.skip_special_tokens) {}

bool OutputStream::is_stop_token(int32_t token) const {
  auto has = [token](const std::vector<int32_t>& ids) {
    return std::find(ids.begin(), ids.end(), token) != ids.end();
  };
  return (!params_.ignore_eos && has(eos_ids_)) || has(params_.stop_token_ids);
}

size_t OutputStream::held_suffix() const {
  size_t best = 0;
  for (const std::string& s : params_.stop) {
    for (size_t k = std::min(s.size() - 1, pending_.size()); k > best; --k) {
      if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
        best = k;
        break;
      }
    }
  }
  return best;
}

OutputStream::Update OutputStream::push(int32_t token) {
  LAGSERVE_CHECK(!finished_, "token {} pushed after the sequence finished", token);
  const int32_t n_before = n_output_++;
  const bool stop_token = n_before >= params_.min_tokens && is_stop_token(token);
  const bool last = stop_token || n_output_ >= params_.max_tokens;

  // Every earlier position was already searched, so a new match must end in
  // the text appended now, after `scanned`.
  const size_t scanned = pending_.size();
  if (!stop_token || params_.include_stop_str_in_output) pending_ += decoder_.push(token);
  if (last) pending_ += decoder_.flush();

  Update update;
  if (n_output_ >= params_.min_tokens) {
    const std::string* match = nullptr;
    size_t match_begin = 0, match_end = std::string::npos;
    for (const std::string& s : params_.stop) {
      const size_t from = scanned >= s.size() ? scanned - s.size() + 1 : 0;
      const size_t pos = pending_.find(s, from);
      if (pos == std::string::npos) continue;
      // The match complete first wins; at the same end, the longer one.
      const size_t end = pos + s.size();
      if (end < match_end || (end == match_end && pos < match_begin)) {
        match = &s;
        match_begin = pos;
        match_end = end;
      }
    }
    if (match) {
      update.text = pending_.substr(0, params_.include_stop_str_in_output ? match_end : match_begin);
      update.finish = FinishReason::Stop;
      update.matched_stop = *match;
      pending_.clear();
      finished_ = true;
      return update;
    }
  }
  if (last) {
    update.text = std::move(pending_);
    pending_.clear();
    update.finish = stop_token ? FinishReason::Stop : FinishReason::Length;
    if (stop_token) update.stop_token = token;
    finished_ = true;
    return update;
  }
  // Hold back text that may still become a stop string, even before
  // min_tokens: the string may complete after it.
  const size_t release = pending_.size() - held_suffix();
  update.text = pending_.substr(0, release);
  pending_.erase(0, release);
  return update;
}

std::string OutputStream::finish_text() {
  if (finished_) return {};
  std::string out = std::move(pending_);
  out += decoder_.flush();
  pending_.clear();
  finished_ = true;
  return out;
}

std::vector<int32_t> OutputStream::banned_ids() const {
  if (n_output_ >= params_.min_tokens) return {};
  std::vector<int32_t> ids = params_.stop_token_ids;
  if (!params_.ignore_eos) ids.insert(ids.end(), eos_ids_.begin(), eos_ids_.end());
  return ids;
}

}  // namespace lagserve::runtime
