// OutputStream tests with the real SmolLM2 tokenizer (the committed
// tests/golden/tokenizer/smollm2/tokenizer.json): stop strings across token
// boundaries, held-back text, EOS / stop ids with min_tokens and ignore_eos,
// max_tokens, UTF-8 that is never split, and random token sequences checked
// against the decoded text.
#include "engine/runtime/stop_checker.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/model/unicode_bytes.h"

namespace lagserve::runtime {
namespace {

const model::Tokenizer& tokenizer() {
  static const std::unique_ptr<model::Tokenizer> tok = [] {
    auto t = model::Tokenizer::from_tokenizer_json(
        std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/tokenizer/smollm2/tokenizer.json", "");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }();
  return *tok;
}

int32_t token_id(std::string_view text) {
  const auto id = tokenizer().find_token(text);
  EXPECT_TRUE(id.has_value()) << text;
  return id.value_or(0);
}

std::vector<int32_t> encode(std::string_view text) { return tokenizer().encode(text, false, false); }

struct StreamRun {
  std::vector<std::string> updates;  // one per pushed token
  std::string text;                  // updates + finish_text()
  OutputStream::Update last;         // the finishing update, if any
  size_t n_pushed = 0;
};

// Pushes tokens until the stream finishes (or they run out, then finish_text).
StreamRun run(const StopParams& params, const std::vector<int32_t>& ids,
        std::vector<int32_t> eos = {token_id("<|im_end|>")}) {
  OutputStream stream(tokenizer(), params, std::move(eos));
  StreamRun r;
  for (int32_t id : ids) {
    OutputStream::Update u = stream.push(id);
    EXPECT_TRUE(model::utf8_is_valid(u.text)) << "update splits a character";
    ++r.n_pushed;
    r.updates.push_back(u.text);
    r.text += u.text;
    if (u.finish != FinishReason::None) {
      r.last = std::move(u);
      EXPECT_EQ(stream.finish_text(), "");
      return r;
    }
  }
  const std::string rest = stream.finish_text();
  EXPECT_TRUE(model::utf8_is_valid(rest));
  r.text += rest;
  return r;
}

StopParams stop_params(std::vector<std::string> stop, int32_t max_tokens = 1000) {
  StopParams p;
  p.max_tokens = max_tokens;
  p.stop = std::move(stop);
  return p;
}

const std::string kFox = "The quick brown fox jumps over the lazy dog.";

TEST(OutputStream, StopStringAcrossTokensIsNeverEmitted) {
  const std::vector<int32_t> ids = encode(kFox);
  const StreamRun r = run(stop_params({"fox jumps"}), ids);
  EXPECT_EQ(r.text, "The quick brown ");
  EXPECT_EQ(r.last.finish, FinishReason::Stop);
  EXPECT_EQ(r.last.matched_stop, "fox jumps");
  EXPECT_FALSE(r.last.stop_token);
  // It ended on the token that completed the string, never showing its start.
  EXPECT_EQ(tokenizer().decode(std::span(ids).first(r.n_pushed)), "The quick brown fox jumps");
  std::string shown;
  for (const std::string& u : r.updates) {
    shown += u;
    EXPECT_EQ(shown.find("fox"), std::string::npos) << shown;
  }
}

TEST(OutputStream, HeldBackTextIsReleasedWhenTheMatchFails) {
  const std::vector<int32_t> ids = encode(kFox);
  const StreamRun r = run(stop_params({"fox jumped", "lazy cat"}, static_cast<int32_t>(ids.size())), ids);
  EXPECT_EQ(r.text, kFox);
  EXPECT_EQ(r.last.finish, FinishReason::Length);
  // Some update held "fox" back and a later one released it.
  std::string shown;
  bool held = false;
  for (size_t i = 0; i < r.updates.size(); ++i) {
    shown += r.updates[i];
    const std::string decoded = tokenizer().decode(std::span(ids).first(i + 1));
    EXPECT_EQ(decoded.compare(0, shown.size(), shown), 0) << "shown text is not a prefix";
    if (decoded.ends_with("fox")) {
      EXPECT_EQ(shown, "The quick brown ");
      held = true;
    }
  }
  EXPECT_TRUE(held);
}

TEST(OutputStream, IncludeStopStringInOutput) {
  StopParams p = stop_params({"fox jumps"});
  p.include_stop_str_in_output = true;
  const StreamRun r = run(p, encode(kFox));
  EXPECT_EQ(r.text, "The quick brown fox jumps");
  EXPECT_EQ(r.last.matched_stop, "fox jumps");
}

TEST(OutputStream, EarliestMatchWins) {
  const std::vector<int32_t> ids = encode(kFox);
  EXPECT_EQ(run(stop_params({"lazy", "quick"}), ids).text, "The ");
  EXPECT_EQ(run(stop_params({"lazy", "quick"}), ids).last.matched_stop, "quick");
  // Overlapping: "own" is complete before "brown fox" is.
  EXPECT_EQ(run(stop_params({"brown fox", "own"}), ids).last.matched_stop, "own");
  EXPECT_EQ(run(stop_params({"brown fox", "own"}), ids).text, "The quick br");
  // Complete at the same place: the longer one.
  EXPECT_EQ(run(stop_params({"fox", "n fox"}), ids).last.matched_stop, "n fox");
  EXPECT_EQ(run(stop_params({"fox", "n fox"}), ids).text, "The quick brow");
}

TEST(OutputStream, EosAndStopIdsRespectMinTokensAndIgnoreEos) {
  const int32_t eos = token_id("<|im_end|>");
  std::vector<int32_t> ids = encode("Hello world");  // 2 tokens
  ids.push_back(eos);
  const std::vector<int32_t> more = encode(" and more words here");
  ids.insert(ids.end(), more.begin(), more.end());
  ids.push_back(eos);

  StopParams p = stop_params({});
  StreamRun r = run(p, ids);
  EXPECT_EQ(r.text, "Hello world");
  EXPECT_EQ(r.last.finish, FinishReason::Stop);
  EXPECT_EQ(r.last.stop_token, eos);
  EXPECT_FALSE(r.last.matched_stop);

  // min_tokens: EOS is banned (and ignored if sampled) until 5 tokens came out.
  p.min_tokens = 5;
  OutputStream stream(tokenizer(), p, {eos});
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::vector<int32_t> banned = stream.banned_ids();
    EXPECT_EQ(banned.empty(), i >= 5) << i;
    const OutputStream::Update u = stream.push(ids[i]);
    if (u.finish != FinishReason::None) {
      EXPECT_EQ(i, ids.size() - 1);
      EXPECT_EQ(u.stop_token, eos);
    }
  }
  EXPECT_TRUE(stream.finished());
  EXPECT_EQ(run(p, ids).text, "Hello world and more words here");

  // ignore_eos: EOS neither stops nor is banned; stop ids still do.
  p.ignore_eos = true;
  p.min_tokens = 0;
  r = run(p, ids);
  EXPECT_EQ(r.last.finish, FinishReason::None);
  EXPECT_EQ(r.text, "Hello world and more words here");
  p.stop_token_ids = {more[1]};  // " more"
  p.min_tokens = 2;
  EXPECT_EQ(OutputStream(tokenizer(), p, {eos}).banned_ids(), std::vector<int32_t>{more[1]});
  r = run(p, ids);
  EXPECT_EQ(r.text, "Hello world and");
  EXPECT_EQ(r.last.stop_token, more[1]);
  p.include_stop_str_in_output = true;
  EXPECT_EQ(run(p, ids).text, "Hello world and more");
}

TEST(OutputStream, MaxTokensEndsWithLengthAndReleasesHeldText) {
  const std::vector<int32_t> ids = encode("I like x and y");
  const StreamRun r = run(stop_params({" xylophone"}, 3), ids);
  EXPECT_EQ(r.n_pushed, 3u);
  EXPECT_EQ(r.last.finish, FinishReason::Length);
  EXPECT_EQ(r.text, "I like x");
  EXPECT_EQ(r.updates.back(), " x");  // held by the push of " x" until it was the last
}

TEST(OutputStream, NeverSplitsUtf8) {
  const std::string text = "你好世界 😀🎉 ok 東京は日本の首都です。";
  const std::vector<int32_t> ids = encode(text);
  bool split = false;  // the test means something only if tokens split characters
  for (int32_t id : ids) split |= !model::utf8_is_valid(tokenizer().token_bytes(id));
  EXPECT_TRUE(split);
  EXPECT_EQ(run(stop_params({}), ids).text, text);  // run() checks each update
  EXPECT_EQ(run(stop_params({"世界"}), ids).text, "你好");
  EXPECT_EQ(run(stop_params({"🎉"}), ids).text, "你好世界 😀");
}

TEST(OutputStream, RandomSequencesMatchTheDecodedText) {
  std::mt19937_64 rng(11);
  const int32_t vocab = tokenizer().vocab_size();
  int n_stopped = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<int32_t> ids(1 + rng() % 40);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
    const std::string full = model::utf8_repair(tokenizer().decode(ids, /*skip_special=*/true));
    // Stop strings: substrings of the text (so that they match) and others.
    std::vector<std::string> stops;
    for (int k = static_cast<int>(rng() % 4); k > 0 && !full.empty(); --k) {
      const size_t pos = rng() % full.size(), len = 1 + rng() % 6;
      const std::string stop = full.substr(pos, len);
      if (model::utf8_is_valid(stop)) stops.push_back(stop);
    }
    if (rng() % 4 == 0) stops.push_back("the");
    StopParams p = stop_params(stops, static_cast<int32_t>(ids.size()));
    p.include_stop_str_in_output = rng() % 2;
    // Expected: the match complete first (ties: the longer one).
    size_t end = std::string::npos, begin = 0;
    std::string matched;
    for (const std::string& s : stops) {
      const size_t pos = full.find(s);
      if (pos == std::string::npos) continue;
      if (pos + s.size() < end || (pos + s.size() == end && pos < begin)) {
        end = pos + s.size();
        begin = pos;
        matched = s;
      }
    }
    const StreamRun r = run(p, ids, {});
    SCOPED_TRACE(testing::Message() << "trial " << trial);
    if (end == std::string::npos) {
      EXPECT_EQ(r.text, full);
      EXPECT_EQ(r.n_pushed, ids.size());
      EXPECT_EQ(r.last.finish, FinishReason::Length);
    } else {
      ++n_stopped;
      EXPECT_EQ(r.text, full.substr(0, p.include_stop_str_in_output ? end : begin));
      EXPECT_EQ(r.last.finish, FinishReason::Stop);
      EXPECT_EQ(r.last.matched_stop, matched);
    }
  }
  EXPECT_GT(n_stopped, 100);
}

TEST(OutputStream, ValidateNamesTheField) {
  const int32_t vocab = tokenizer().vocab_size();
  EXPECT_TRUE(validate(StopParams{}, vocab).ok());
  auto error = [&](auto edit) {
    StopParams p;
    edit(p);
    const absl::Status s = validate(p, vocab);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_NE(error([](auto& p) { p.max_tokens = 0; }).find("max_tokens"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.min_tokens = 17; }).find("min_tokens"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.stop = {""}; }).find("stop"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.stop = {"\xff"}; }).find("stop"), std::string::npos);
  EXPECT_NE(error([&](auto& p) { p.stop_token_ids = {vocab}; }).find("stop_token_ids"),
            std::string::npos);
}

}  // namespace
}  // namespace lagserve::runtime
