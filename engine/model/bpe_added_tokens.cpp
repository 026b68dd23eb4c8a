// Added-token matching (see bpe_added_tokens.h).
#include "engine/model/bpe_added_tokens.h"

#include <algorithm>

#include "engine/model/unicode_bytes.h"

namespace lagserve::model {

bool is_unicode_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens)
    : tokens_(std::move(tokens)), by_first_byte_(256) {
  for (uint32_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].text.empty()) continue;
    by_first_byte_[static_cast<uint8_t>(tokens_[i].text[0])].push_back(i);
  }
  for (auto& candidates : by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(), [&](uint32_t a, uint32_t b) {
      return tokens_[a].text.size() > tokens_[b].text.size();
    });
  }
}

namespace {

// Start of the whitespace character that ends text[lo, end), or `end` if the
// last character there is not whitespace.
size_t whitespace_before(std::string_view text, size_t lo, size_t end) {
  if (end <= lo) return end;
  size_t p = end - 1;
  while (p > lo && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
  const Utf8Step step = utf8_step(text.substr(p, end - p));
  const bool ws = step.kind == Utf8Step::Valid && step.n_bytes == end - p &&
                  is_unicode_whitespace(step.cp);
  return ws ? p : end;
}

// End of the whitespace character that starts at `begin`, or `begin`.
size_t whitespace_after(std::string_view text, size_t begin) {
  if (begin >= text.size()) return begin;
  const Utf8Step step = utf8_step(text.substr(begin));
  const bool ws = step.kind == Utf8Step::Valid && is_unicode_whitespace(step.cp);
  return ws ? begin + step.n_bytes : begin;
}

}  // namespace

void AddedTokenMatcher::split(std::string_view text, bool parse_special,
                              std::vector<Segment>& out) const {
  if (tokens_.empty()) {
    if (!text.empty()) out.push_back({text, -1});
    return;
  }
  size_t plain_begin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto& candidates = by_first_byte_[static_cast<uint8_t>(text[pos])];
    const AddedToken* match = nullptr;
    for (uint32_t i : candidates) {
      const AddedToken& token = tokens_[i];
      if (token.special && !parse_special) continue;
      if (text.substr(pos).starts_with(token.text)) {
        match = &token;
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos;
    size_t end = pos + match->text.size();
    if (match->lstrip) {
      for (size_t p; (p = whitespace_before(text, plain_begin, begin)) != begin;) begin = p;
    }
    if (match->rstrip) {
      for (size_t p; (p = whitespace_after(text, end)) != end;) end = p;
    }
    if (begin > plain_begin) out.push_back({text.substr(plain_begin, begin - plain_begin), -1});
    out.push_back({text.substr(begin, end - begin), match->id});
    plain_begin = pos = end;
  }
  if (plain_begin < text.size()) out.push_back({text.substr(plain_begin), -1});
}

}  // namespace lagserve::model
