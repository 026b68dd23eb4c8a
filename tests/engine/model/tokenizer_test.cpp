// Tokenizer tests: ids against Hugging Face golden data (from the GGUF and
// from the committed tokenizer.json), round trips, streaming decode,
// pre-tokenizer splits, and bad inputs. Golden data:
// tests/golden/make_tokenizer_golden.py.
#include "engine/model/tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/model/gguf.h"
#include "engine/model/pretokenizer.h"
#include "engine/model/unicode_bytes.h"
#include "tests/common/file_io.h"

namespace lagserve::model {
namespace {

using Json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kGoldenDir = std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/tokenizer";

std::string model_path() {
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") +
         "/.cache/lagserve/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::vector<Json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing " << path;
  std::vector<Json> rows;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rows.push_back(Json::parse(line));
  }
  return rows;
}

struct Golden {
  std::string text;
  std::vector<int32_t> ids;
};

const std::vector<Golden>& golden() {
  static const std::vector<Golden> rows = [] {
    std::vector<Golden> out;
    for (const Json& row : read_jsonl(kGoldenDir + "/smollm2_ids.jsonl")) {
      out.push_back({row["text"].get<std::string>(), row["ids"].get<std::vector<int32_t>>()});
    }
    return out;
  }();
  return rows;
}

using testing_util::write_temp;

const Tokenizer* json_tokenizer() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    auto t = Tokenizer::from_tokenizer_json(kGoldenDir + "/smollm2/tokenizer.json",
                                            kGoldenDir + "/smollm2/tokenizer_config.json");
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }();
  return tok.get();
}

const Tokenizer* gguf_tokenizer() {
  static const std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!fs::exists(model_path())) return nullptr;
    auto gguf = GgufFile::open(model_path());
    EXPECT_TRUE(gguf.ok()) << gguf.status();
    if (!gguf.ok()) return nullptr;
    auto t = Tokenizer::from_gguf(**gguf);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? std::move(*t) : nullptr;
  }();
  return tok.get();
}

void expect_golden_ids(const Tokenizer& tok) {
  ASSERT_GE(golden().size(), 300u);
  int n_bad = 0;
  for (const Golden& g : golden()) {
    const auto ids = tok.encode(g.text, tok.add_bos_default());
    EXPECT_EQ(ids, g.ids) << "text: " << Json(g.text).dump();
    n_bad += ids != g.ids;
    if (n_bad > 10) FAIL() << "too many mismatches";
  }
}

TEST(TokenizerJson, MatchesGoldenIds) {
  ASSERT_NE(json_tokenizer(), nullptr);
  expect_golden_ids(*json_tokenizer());
}

TEST(TokenizerGguf, MatchesGoldenIds) {
  if (!fs::exists(model_path())) GTEST_SKIP() << "no model at " << model_path();
  ASSERT_NE(gguf_tokenizer(), nullptr);
  expect_golden_ids(*gguf_tokenizer());
}

TEST(TokenizerGguf, AgreesWithTokenizerJsonOnSpecials) {
  if (!fs::exists(model_path())) GTEST_SKIP() << "no model at " << model_path();
  const Tokenizer& a = *gguf_tokenizer();
  const Tokenizer& b = *json_tokenizer();
  EXPECT_EQ(a.vocab_size(), 49152);
  EXPECT_EQ(a.vocab_size(), b.vocab_size());
  EXPECT_EQ(a.bos_id(), std::optional<int32_t>(1));
  EXPECT_EQ(a.eos_id(), std::optional<int32_t>(2));
  EXPECT_EQ(b.bos_id(), a.bos_id());
  EXPECT_EQ(b.eos_id(), a.eos_id());
  EXPECT_FALSE(a.add_bos_default());
  EXPECT_FALSE(b.add_bos_default());
  EXPECT_EQ(a.stop_ids(), (std::vector<int32_t>{0, 2}));  // <|endoftext|>, <|im_end|>
  EXPECT_EQ(b.stop_ids(), a.stop_ids());
  for (int32_t id = 0; id < a.vocab_size(); ++id) {
    ASSERT_EQ(a.token_text(id), b.token_text(id)) << id;
    ASSERT_EQ(a.is_special(id), b.is_special(id)) << id;
  }
  EXPECT_EQ(a.token_text(1), "<|im_start|>");
  EXPECT_TRUE(a.is_special(1));
  EXPECT_FALSE(a.is_special(28120));
  EXPECT_EQ(a.find_token("<|im_end|>"), std::optional<int32_t>(2));
  EXPECT_EQ(a.find_token("no such token"), std::nullopt);
}

TEST(TokenizerJson, RoundTripsEveryGoldenString) {
  const Tokenizer& tok = *json_tokenizer();
  for (const Golden& g : golden()) {
    EXPECT_EQ(tok.decode(tok.encode(g.text, false)), g.text) << Json(g.text).dump();
    EXPECT_EQ(tok.decode(tok.encode(g.text, false, /*parse_special=*/false)), g.text);
  }
}

TEST(TokenizerJson, EncodesConcurrently) {
  const Tokenizer& tok = *json_tokenizer();
  std::vector<std::thread> threads;
  std::atomic<int> n_bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < 4 * golden().size(); i += 3) {
        const Golden& g = golden()[i % golden().size()];
        n_bad += tok.encode(g.text, false) != g.ids;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(n_bad, 0);
}

TEST(TokenizerJson, RoundTripsBytesThatAreNotUtf8) {
  const Tokenizer& tok = *json_tokenizer();
  for (std::string raw : {std::string("\xc3 abc \xc3"), std::string("a\x80\x80z"),
                          std::string("\xed\xa0\x80"), std::string("\xf0\x9f\x98"),
                          std::string("ok \xe6\x97 then\n\xe0\xaf")}) {
    EXPECT_EQ(tok.decode(tok.encode(raw, false)), raw);
  }
  // SmolLM2's vocabulary has no token for a few bytes (0x04, 0xFF, ...):
  // like Hugging Face, encoding drops them.
  EXPECT_EQ(tok.decode(tok.encode("a\x04" "b\xff", false)), "ab");
}

TEST(TokenizerJson, SpecialTokensAreTextWhenNotParsed) {
  const Tokenizer& tok = *json_tokenizer();
  const std::string text = "hi<|im_start|>user\nx<|im_end|>";
  const auto parsed = tok.encode(text, false, true);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), 1), 1);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), 2), 1);
  const auto plain = tok.encode(text, false, false);
  for (int32_t id : plain) EXPECT_FALSE(tok.is_special(id)) << id;
  EXPECT_EQ(tok.decode(plain), text);
  EXPECT_EQ(tok.decode(parsed, /*skip_special=*/true), "hiuser\nx");
  EXPECT_EQ(tok.token_bytes(tok.find_token("Ġthe").value()), " the");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{2, 1}), "<|im_end|><|im_start|>");
}

TEST(TokenizerJson, BosIsPrependedOnlyWhenAsked) {
  const Tokenizer& tok = *json_tokenizer();
  EXPECT_EQ(tok.encode("hi", true).front(), 1);
  EXPECT_EQ(tok.encode("hi", false).front(), 6004);
  EXPECT_EQ(tok.encode("", true), std::vector<int32_t>{1});
}

TEST(TokenizerJson, SplitVariantOfThePreTokenizerGivesTheSameIds) {
  // Same tokenizer with the digit and GPT-2 rules written as regex Splits and
  // ByteLevel without its regex (the Llama-3 layout); the golden script checks
  // with HF that these ids are unchanged.
  std::ifstream in(kGoldenDir + "/smollm2/tokenizer.json");
  Json j = Json::parse(in);
  j["pre_tokenizer"] = Json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Isolated", "invert": false},
      {"type": "Split", "pattern": {"Regex": ""}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})");
  j["pre_tokenizer"]["pretokenizers"][1]["pattern"]["Regex"] = std::string(kGpt2Pattern);
  auto tok = Tokenizer::from_tokenizer_json(write_temp("split.json", j.dump()), "");
  ASSERT_TRUE(tok.ok()) << tok.status();
  expect_golden_ids(**tok);
}

// Decodes ids one at a time; every piece must be valid UTF-8.
std::string stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder decoder(tok, skip_special);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = decoder.push(id);
    EXPECT_TRUE(utf8_is_valid(piece)) << Json::binary({piece.begin(), piece.end()}).dump();
    out += piece;
  }
  const std::string rest = decoder.flush();
  EXPECT_TRUE(utf8_is_valid(rest));
  return out + rest;
}

TEST(TokenizerStreamDecoder, EmitsWholeCharactersOnly) {
  const Tokenizer& tok = *json_tokenizer();
  int n_multibyte = 0;
  for (const Golden& g : golden()) {
    const bool ascii = std::all_of(g.text.begin(), g.text.end(),
                                   [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    n_multibyte += !ascii;
    EXPECT_EQ(stream(tok, g.ids, /*skip_special=*/false), g.text) << Json(g.text).dump();
    EXPECT_EQ(stream(tok, g.ids, /*skip_special=*/true), tok.decode(g.ids, true));
  }
  EXPECT_GT(n_multibyte, 100);
}

TEST(TokenizerStreamDecoder, HoldsIncompleteBytesAndFlushesThemAsReplacement) {
  const Tokenizer& tok = *json_tokenizer();
  // "😀" is F0 9F 98 80; feed its bytes as single-byte tokens.
  auto byte_token = [&](uint8_t b) { return tok.find_token(byte_to_mapped_utf8(b)).value(); };
  StreamDecoder decoder(tok);
  EXPECT_EQ(decoder.push(byte_token(0xF0)), "");
  EXPECT_EQ(decoder.push(byte_token(0x9F)), "");
  EXPECT_EQ(decoder.push(byte_token(0x98)), "");
  EXPECT_EQ(decoder.push(byte_token(0x80)), "😀");
  EXPECT_EQ(decoder.push(byte_token(0xE6)), "");
  EXPECT_EQ(decoder.flush(), "\xEF\xBF\xBD");
  // An invalid byte followed by ASCII is replaced at once.
  EXPECT_EQ(decoder.push(byte_token(0x80)), "\xEF\xBF\xBD");
  EXPECT_EQ(decoder.push(byte_token(0xE6)), "");
  EXPECT_EQ(decoder.push(byte_token('a')), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(decoder.flush(), "");
}

TEST(TokenizerPreTokenizer, MatchesHuggingFaceSplits) {
  struct Rule {
    const char* name;
    std::vector<std::string> patterns;
  };
  const std::vector<Rule> rules = {
      {"gpt2", {std::string(kGpt2Pattern)}},
      {"smollm", {std::string(kDigitPattern), std::string(kGpt2Pattern)}},
      {"llama3", {std::string(kLlama3Pattern)}},
      {"qwen2", {std::string(kQwen2Pattern)}},
  };
  const auto rows = read_jsonl(kGoldenDir + "/pretok_golden.jsonl");
  ASSERT_GE(rows.size(), 300u);
  for (const Rule& rule : rules) {
    auto pre = PreTokenizer::create(rule.patterns);
    ASSERT_TRUE(pre.ok()) << pre.status();
    for (const Json& row : rows) {
      const std::string text = row["text"].get<std::string>();
      std::vector<std::string_view> pieces;
      pre->split(text, pieces);
      const auto want = row[rule.name].get<std::vector<std::string>>();
      EXPECT_EQ(std::vector<std::string>(pieces.begin(), pieces.end()), want)
          << rule.name << " on " << Json(text).dump();
    }
  }
}

TEST(TokenizerPreTokenizer, SurvivesHugeRuns) {
  auto pre = PreTokenizer::create({std::string(kGpt2Pattern)});
  ASSERT_TRUE(pre.ok());
  const std::string text = std::string(1 << 20, ' ') + "x" + std::string(1 << 20, '!');
  std::vector<std::string_view> pieces;
  pre->split(text, pieces);
  ASSERT_EQ(pieces.size(), 3u);  // spaces, " x", "!!!..."
  EXPECT_EQ(pieces[1], " x");
  EXPECT_EQ(pieces[0].size() + pieces[1].size() + pieces[2].size(), text.size());
}

// --- Bad tokenizer.json inputs ----------------------------------------------

// A tiny valid byte-level tokenizer: the 256 byte tokens, "ab" and "abc",
// and one special token.
Json tiny_tokenizer() {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[std::string(byte_to_mapped_utf8(b))] = b;
  vocab["ab"] = 256;
  vocab["abc"] = 257;
  return Json{{"version", "1.0"},
              {"added_tokens", Json::array({Json{{"id", 258}, {"content", "<|end|>"},
                                                 {"special", true}}})},
              {"normalizer", nullptr},
              {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false},
                                 {"use_regex", true}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab},
                         {"merges", Json::array({"a b", Json::array({"ab", "c"})})}}}};
}

absl::StatusOr<std::unique_ptr<Tokenizer>> load(const Json& j, const std::string& config = "") {
  const std::string config_path = config.empty() ? "" : write_temp("config.json", config);
  return Tokenizer::from_tokenizer_json(write_temp("tok.json", j.dump()), config_path);
}

void expect_error(const Json& j, const std::string& fragment) {
  auto tok = load(j);
  ASSERT_FALSE(tok.ok()) << "expected an error mentioning " << fragment;
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(tok.status().message()).find(fragment), std::string::npos)
      << tok.status();
}

TEST(TokenizerJsonErrors, TinyTokenizerWorks) {
  auto tok = load(tiny_tokenizer(), R"({"eos_token": {"content": "<|end|>"}})");
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->encode("abc ab<|end|>", false), (std::vector<int32_t>{257, 32, 256, 258}));
  EXPECT_EQ((*tok)->eos_id(), std::optional<int32_t>(258));
  EXPECT_EQ((*tok)->vocab_size(), 259);
}

TEST(TokenizerJsonErrors, AddedTokenFlags) {
  Json j = tiny_tokenizer();
  j["added_tokens"].push_back({{"id", 259}, {"content", "<u>"}, {"special", false},
                               {"lstrip", true}, {"rstrip", true}});
  auto tok = load(j);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // Non-special added tokens are matched even when special parsing is off,
  // and swallow the whitespace around them.
  EXPECT_EQ((*tok)->encode("a  <u> b", false, false), (std::vector<int32_t>{97, 259, 98}));
  EXPECT_FALSE((*tok)->is_special(259));
  EXPECT_EQ((*tok)->decode(std::vector<int32_t>{259, 258}, true), "<u>");
}

TEST(TokenizerJsonErrors, ReportsWhatIsWrong) {
  EXPECT_EQ(Tokenizer::from_tokenizer_json("/no/such/tokenizer.json", "").status().code(),
            absl::StatusCode::kNotFound);
  {
    auto tok = Tokenizer::from_tokenizer_json(write_temp("bad.json", "{not json"), "");
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  }
  Json j = tiny_tokenizer();
  j["model"]["merges"].push_back("x zz");
  expect_error(j, "'zz' is not in the vocabulary");

  j = tiny_tokenizer();
  j["model"]["merges"].push_back("abc");
  expect_error(j, "is not 'a b'");

  j = tiny_tokenizer();
  j["model"]["type"] = "WordPiece";
  expect_error(j, "model type 'WordPiece'");

  j = tiny_tokenizer();
  j["normalizer"] = {{"type", "NFC"}};
  expect_error(j, "normalizer 'NFC'");

  j = tiny_tokenizer();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_error(j, "pre_tokenizer type 'Metaspace'");

  j = tiny_tokenizer();
  j["pre_tokenizer"] = nullptr;
  expect_error(j, "without pre_tokenizer");

  j = tiny_tokenizer();
  j["pre_tokenizer"] = Json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"},
      {"type": "ByteLevel", "use_regex": false}]})");
  expect_error(j, "does not compile");

  j = tiny_tokenizer();
  j["pre_tokenizer"] = Json::parse(R"({"type": "Split", "pattern": {"Regex": "a"},
      "behavior": "MergedWithNext"})");
  expect_error(j, "behavior 'MergedWithNext'");

  j = tiny_tokenizer();
  j["model"]["vocab"].erase(std::string(byte_to_mapped_utf8('q')));
  expect_error(j, "no token for byte 0x71");
  j = tiny_tokenizer();
  j["model"]["vocab"].erase(std::string(byte_to_mapped_utf8(0x04)));
  ASSERT_TRUE(load(j).ok());
  EXPECT_EQ((*load(j))->encode("a\x04", false), (std::vector<int32_t>{97}));
  j["model"]["unk_token"] = "<|end|>";
  EXPECT_EQ((*load(j))->encode("a\x04", false), (std::vector<int32_t>{97, 258}));

  j = tiny_tokenizer();
  j["added_tokens"][0]["id"] = 256;
  expect_error(j, "id 256 is given to both");

  j = tiny_tokenizer();
  j["model"]["vocab"]["ab"] = "not a number";
  expect_error(j, "malformed field");

  j = tiny_tokenizer();
  j["model"]["byte_fallback"] = true;
  expect_error(j, "byte_fallback");

  j = tiny_tokenizer();
  j["post_processor"] = Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"Sequence": {"id": "A"}}, {"SpecialToken": {"id": "<|end|>"}}]})");
  expect_error(j, "appends tokens after the text");

  EXPECT_FALSE(load(tiny_tokenizer(), R"({"bos_token": "<nope>"})").ok());
}

TEST(TokenizerJson, PostProcessorBosAndIgnoreMerges) {
  Json j = tiny_tokenizer();
  j["post_processor"] = Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<|end|>", "type_id": 0}}, {"Sequence": {"id": "A"}}]})");
  auto tok = load(j);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_TRUE((*tok)->add_bos_default());
  EXPECT_EQ((*tok)->encode("ab", true), (std::vector<int32_t>{258, 256}));
  auto no_bos = load(j, R"({"add_bos_token": false})");
  ASSERT_TRUE(no_bos.ok());
  EXPECT_FALSE((*no_bos)->add_bos_default());

  // "abc" is a token but its merges are removed: only ignore_merges finds it.
  j = tiny_tokenizer();
  j["model"]["merges"] = Json::array({"a b"});
  EXPECT_EQ((*load(j))->encode("abc", false), (std::vector<int32_t>{256, 99}));
  j["model"]["ignore_merges"] = true;
  EXPECT_EQ((*load(j))->encode("abc", false), (std::vector<int32_t>{257}));
}

}  // namespace
}  // namespace lagserve::model
