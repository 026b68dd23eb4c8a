// Pre-tokenizer on PCRE2 (see pretokenizer.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/model/pretokenizer.h"

#include <pcre2.h>

#include <fmt/format.h>

#include "engine/common/check.h"
#include "engine/model/unicode_bytes.h"

namespace lagserve::model {

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() { pcre2_code_free(code); }
};

namespace {

// Per-thread match state: encode() is const and called from many threads.
// The JIT stack grows to 4 MiB so that long runs of one character class
// (a megabyte of spaces) still match instead of failing with STACKLIMIT.
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);

  MatchState() {
    LAGSERVE_CHECK(data && context, "PCRE2 allocation failed");
    if (jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

size_t char_len_at(std::string_view text, size_t pos) {
  const Utf8Step step = utf8_step(text.substr(pos));
  return step.n_bytes == 0 ? 1 : step.n_bytes;
}

}  // namespace

PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

absl::StatusOr<PreTokenizer> PreTokenizer::create(std::vector<std::string> patterns) {
  PreTokenizer pre;
  for (const std::string& pattern : patterns) {
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                      PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(fmt::format(
          "pre-tokenizer regex '{}' does not compile at offset {}: {}", pattern, error_offset,
          reinterpret_cast<const char*>(message)));
    }
    // JIT is an optimisation only: without it (no JIT support in this build
    // of PCRE2) pcre2_match interprets the same pattern.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    auto regex = std::make_unique<Regex>();
    regex->code = code;
    pre.regexes_.push_back(std::move(regex));
  }
  pre.patterns_ = std::move(patterns);
  return pre;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t valid = utf8_valid_prefix(text.substr(pos));
    if (valid > 0) {
      split_valid(text.substr(pos, valid), 0, out);
      pos += valid;
      continue;
    }
    const Utf8Step step = utf8_step(text.substr(pos));
    out.push_back(text.substr(pos, step.n_bytes));
    pos += step.n_bytes;
  }
}

// Precondition: text is valid UTF-8 and non-empty.
void PreTokenizer::split_valid(std::string_view text, size_t step,
                               std::vector<std::string_view>& out) const {
  if (step == regexes_.size()) {
    out.push_back(text);
    return;
  }
  auto emit = [&](size_t begin, size_t end) {
    if (end > begin) split_valid(text.substr(begin, end - begin), step + 1, out);
  };
  MatchState& state = match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t piece_begin = 0;  // start of the text not yet emitted
  size_t search = 0;       // where the next match may start
  while (search < text.size()) {
    const int rc = pcre2_match(regexes_[step]->code, subject, text.size(), search,
                               PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc < 0) {
      // NOMATCH: the rest is a gap. Any other error (match or JIT stack limit
      // on pathological input) also ends splitting here: the rest stays one
      // piece, which BPE still encodes losslessly.
      break;
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const size_t match_begin = ovector[0], match_end = ovector[1];
    if (match_end == match_begin) {
      // An empty match yields no piece; step over one character.
      if (match_begin >= text.size()) break;
      search = match_begin + char_len_at(text, match_begin);
      continue;
    }
    emit(piece_begin, match_begin);
    emit(match_begin, match_end);
    piece_begin = search = match_end;
  }
  emit(piece_begin, text.size());
}

}  // namespace lagserve::model
