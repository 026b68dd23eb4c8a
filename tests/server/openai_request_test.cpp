// parse_openai_request and param_of: every field of a completions or chat body
// lands in the typed OpenAiCall, and each bad body is an ApiError naming the field.
//
// Run: ninja -C build test_openai_request && build/tests/test_openai_request
#include "server/openai_request.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lagserve::server {
namespace {

using ::testing::AnyOf;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

// The call, or a test failure naming the error (and an empty call).
OpenAiCall must_parse(std::string_view body, bool chat) {
  std::variant<OpenAiCall, ApiError> r = parse_openai_request(body, chat);
  if (const ApiError* e = std::get_if<ApiError>(&r)) {
    ADD_FAILURE() << "unexpected error on " << body << "\n  param '" << e->param << "': "
                  << e->message;
    return {};
  }
  return std::get<OpenAiCall>(std::move(r));
}

// The error, or a test failure (and a default ApiError with an impossible status).
ApiError must_fail(std::string_view body, bool chat) {
  std::variant<OpenAiCall, ApiError> r = parse_openai_request(body, chat);
  if (const ApiError* e = std::get_if<ApiError>(&r)) return *e;
  ADD_FAILURE() << "accepted: " << body;
  return ApiError{0, "", "", "<accepted>", ""};
}

const std::vector<model::ChatMessage>& messages_of(const OpenAiCall& c) {
  static const std::vector<model::ChatMessage> kNone;
  return c.call.prompts.size() == 1 ? c.call.prompts[0].messages : kNone;
}

// --- completions: every field ------------------------------------------------------

TEST(OpenAiRequest, FullCompletionsBodyMapsEveryField) {
  const OpenAiCall c = must_parse(R"({
    "model": "smol", "prompt": "hello", "stream": true,
    "stream_options": {"include_usage": true, "continuous_usage_stats": false},
    "n": 3, "best_of": 3, "max_tokens": 5, "max_completion_tokens": 7,
    "temperature": 0.5, "top_p": 0.75, "top_k": 40, "min_p": 0.125,
    "presence_penalty": 0.5, "frequency_penalty": -0.25, "repetition_penalty": 1.5,
    "seed": 1234, "logit_bias": {"5": 10, "7": -100.0}, "logprobs": 3,
    "stop": ["x", "yy"], "stop_token_ids": [2, 3], "ignore_eos": true, "min_tokens": 2,
    "skip_special_tokens": false, "include_stop_str_in_output": true,
    "lagkv": {"sink": 4, "lag": 64, "ratio": 0.25, "score_v_weight": 0.5},
    "user": "someone", "some_future_field": {"ignored": true}})",
                                  /*chat=*/false);
  EXPECT_FALSE(c.chat);
  EXPECT_TRUE(c.stream);
  EXPECT_TRUE(c.include_usage);
  EXPECT_EQ(c.model, "smol");
  EXPECT_EQ(c.logprobs, 3);

  const GenerateCall& g = c.call;
  EXPECT_EQ(g.id_prefix, "cmpl");
  ASSERT_EQ(g.prompts.size(), 1u);
  EXPECT_EQ(g.prompts[0].kind, PromptInput::Kind::Text);
  EXPECT_EQ(g.prompts[0].text, "hello");
  EXPECT_EQ(g.n, 3);
  EXPECT_EQ(g.max_tokens, std::optional<int32_t>(7));  // max_completion_tokens wins

  const runtime::SamplingParams& s = g.sampling;
  EXPECT_EQ(s.temperature, 0.5f);
  EXPECT_EQ(s.top_p, 0.75f);
  EXPECT_EQ(s.top_k, 40);
  EXPECT_EQ(s.min_p, 0.125f);
  EXPECT_EQ(s.presence_penalty, 0.5f);
  EXPECT_EQ(s.frequency_penalty, -0.25f);
  EXPECT_EQ(s.repetition_penalty, 1.5f);
  EXPECT_EQ(s.seed, std::optional<uint64_t>(1234));
  EXPECT_THAT(s.logit_bias, UnorderedElementsAre(Pair(5, 10.0f), Pair(7, -100.0f)));
  EXPECT_EQ(s.logprobs, 3);

  const runtime::StopParams& stop = g.stop;
  EXPECT_THAT(stop.stop, ElementsAre("x", "yy"));
  EXPECT_THAT(stop.stop_token_ids, ElementsAre(2, 3));
  EXPECT_TRUE(stop.ignore_eos);
  EXPECT_EQ(stop.min_tokens, 2);
  EXPECT_FALSE(stop.skip_special_tokens);
  EXPECT_TRUE(stop.include_stop_str_in_output);

  ASSERT_TRUE(g.lagkv.has_value());
  EXPECT_TRUE(g.lagkv->enabled);
  EXPECT_EQ(g.lagkv->fields.sink, std::optional<int32_t>(4));
  EXPECT_EQ(g.lagkv->fields.lag, std::optional<int32_t>(64));
  EXPECT_EQ(g.lagkv->fields.ratio, std::optional<double>(0.25));
  EXPECT_EQ(g.lagkv->fields.score_v_weight, std::optional<float>(0.5f));
  EXPECT_FALSE(g.lagkv->fields.keep.has_value());
}

TEST(OpenAiRequest, MinimalBodyKeepsTheDefaults) {
  for (const char* body : {R"({"prompt": "x"})",
                           R"({"prompt": "x", "max_tokens": null, "temperature": null,
                               "n": null, "lagkv": null, "stop": null, "logprobs": null,
                               "model": null, "stream": null})"}) {
    SCOPED_TRACE(body);
    const OpenAiCall c = must_parse(body, false);
    const runtime::SamplingParams defaults_s;
    const runtime::StopParams defaults_stop;
    EXPECT_FALSE(c.stream);
    EXPECT_FALSE(c.include_usage);
    EXPECT_EQ(c.model, "");
    EXPECT_EQ(c.logprobs, -1);
    EXPECT_EQ(c.call.n, 1);
    EXPECT_FALSE(c.call.max_tokens.has_value());  // the core picks 16 (or the rest of the context)
    EXPECT_FALSE(c.call.lagkv.has_value());       // the server's policy
    EXPECT_EQ(c.call.sampling.temperature, defaults_s.temperature);
    EXPECT_EQ(c.call.sampling.top_p, defaults_s.top_p);
    EXPECT_EQ(c.call.sampling.top_k, defaults_s.top_k);
    EXPECT_FALSE(c.call.sampling.seed.has_value());
    EXPECT_TRUE(c.call.sampling.logit_bias.empty());
    EXPECT_EQ(c.call.sampling.logprobs, -1);
    EXPECT_TRUE(c.call.stop.stop.empty());
    EXPECT_EQ(c.call.stop.ignore_eos, defaults_stop.ignore_eos);
    EXPECT_EQ(c.call.stop.skip_special_tokens, defaults_stop.skip_special_tokens);
    EXPECT_EQ(c.call.stop.min_tokens, 0);
  }
}

TEST(OpenAiRequest, MaxTokensAndMaxCompletionTokens) {
  EXPECT_EQ(must_parse(R"({"prompt": "x", "max_tokens": 9})", false).call.max_tokens, 9);
  EXPECT_EQ(must_parse(R"({"prompt": "x", "max_completion_tokens": 11})", false).call.max_tokens,
            11);
  EXPECT_EQ(must_parse(R"({"prompt": "x", "max_tokens": 9, "max_completion_tokens": 11})", false)
                .call.max_tokens,
            11);
  EXPECT_EQ(must_parse(R"({"prompt": "x", "max_tokens": 2147483647})", false).call.max_tokens,
            INT32_MAX);
}

TEST(OpenAiRequest, StopAsOneString) {
  EXPECT_THAT(must_parse(R"({"prompt": "x", "stop": "\n\n"})", false).call.stop.stop,
              ElementsAre("\n\n"));
}

TEST(OpenAiRequest, SeedAndTopKEdges) {
  EXPECT_EQ(must_parse(R"({"prompt": "x", "seed": 0})", false).call.sampling.seed, 0u);
  EXPECT_EQ(must_parse(R"({"prompt": "x", "seed": 9223372036854775807})", false).call.sampling.seed,
            uint64_t{INT64_MAX});
  EXPECT_EQ(must_parse(R"({"prompt": "x", "top_k": -1})", false).call.sampling.top_k, -1);
  EXPECT_EQ(must_parse(R"({"prompt": "x", "top_k": 0})", false).call.sampling.top_k, 0);
}

TEST(OpenAiRequest, LagkvForms) {
  const OpenAiCall off = must_parse(R"({"prompt": "x", "lagkv": false})", false);
  ASSERT_TRUE(off.call.lagkv.has_value());
  EXPECT_FALSE(off.call.lagkv->enabled);

  const OpenAiCall on = must_parse(R"({"prompt": "x", "lagkv": true})", false);
  ASSERT_TRUE(on.call.lagkv.has_value());
  EXPECT_TRUE(on.call.lagkv->enabled);
  EXPECT_FALSE(on.call.lagkv->fields.lag.has_value());

  const OpenAiCall empty = must_parse(R"({"prompt": "x", "lagkv": {}})", false);
  ASSERT_TRUE(empty.call.lagkv.has_value());
  EXPECT_TRUE(empty.call.lagkv->enabled);
  EXPECT_FALSE(empty.call.lagkv->fields.sink.has_value());
  EXPECT_FALSE(empty.call.lagkv->fields.ratio.has_value());

  const OpenAiCall keep = must_parse(R"({"prompt": "x", "lagkv": {"lag": 16, "keep": 3}})", false);
  ASSERT_TRUE(keep.call.lagkv.has_value());
  EXPECT_EQ(keep.call.lagkv->fields.lag, 16);
  EXPECT_EQ(keep.call.lagkv->fields.keep, 3);
  EXPECT_FALSE(keep.call.lagkv->fields.ratio.has_value());
}

// The ratio is a double in LagPolicyFields and in --lagkv's parser; read through a
// float, 0.7 * lag=5 rounds to keep=3 over HTTP but keep=4 on the command line.
TEST(OpenAiRequest, LagkvRatioKeepsDoublePrecision) {
  const OpenAiCall c = must_parse(R"({"prompt": "x", "lagkv": {"lag": 5, "ratio": 0.7}})", false);
  ASSERT_TRUE(c.call.lagkv.has_value());
  EXPECT_EQ(c.call.lagkv->fields.ratio, std::optional<double>(0.7));
}

// --- prompt forms -------------------------------------------------------------------

TEST(OpenAiRequest, PromptForms) {
  {
    const OpenAiCall c = must_parse(R"({"prompt": "one"})", false);
    ASSERT_EQ(c.call.prompts.size(), 1u);
    EXPECT_EQ(c.call.prompts[0].kind, PromptInput::Kind::Text);
    EXPECT_EQ(c.call.prompts[0].text, "one");
  }
  {
    const OpenAiCall c = must_parse(R"({"prompt": ["one", "two"]})", false);
    ASSERT_EQ(c.call.prompts.size(), 2u);
    EXPECT_EQ(c.call.prompts[0].kind, PromptInput::Kind::Text);
    EXPECT_EQ(c.call.prompts[0].text, "one");
    EXPECT_EQ(c.call.prompts[1].text, "two");
  }
  {
    const OpenAiCall c = must_parse(R"({"prompt": [1, 2, 2147483647]})", false);
    ASSERT_EQ(c.call.prompts.size(), 1u);  // the vocabulary is checked by the core
    EXPECT_EQ(c.call.prompts[0].kind, PromptInput::Kind::Tokens);
    EXPECT_THAT(c.call.prompts[0].tokens, ElementsAre(1, 2, INT32_MAX));
  }
  {
    const OpenAiCall c = must_parse(R"({"prompt": [[1, 2], [3]]})", false);
    ASSERT_EQ(c.call.prompts.size(), 2u);
    EXPECT_EQ(c.call.prompts[0].kind, PromptInput::Kind::Tokens);
    EXPECT_THAT(c.call.prompts[0].tokens, ElementsAre(1, 2));
    EXPECT_EQ(c.call.prompts[1].kind, PromptInput::Kind::Tokens);
    EXPECT_THAT(c.call.prompts[1].tokens, ElementsAre(3));
  }
  {
    const OpenAiCall c = must_parse(R"({"prompt": "caf\u00e9 \ud83d\ude00 a\u0000b"})", false);
    ASSERT_EQ(c.call.prompts.size(), 1u);
    EXPECT_EQ(c.call.prompts[0].text, std::string("caf\xc3\xa9 \xf0\x9f\x98\x80 a\0b", 14));
  }
}

TEST(OpenAiRequest, CompletionsIgnoresMessagesAndChatIgnoresPrompt) {
  EXPECT_EQ(must_fail(R"({"messages": [{"role": "user", "content": "x"}]})", false).param,
            "prompt");
  EXPECT_EQ(must_fail(R"({"prompt": "x"})", true).param, "messages");
}

// --- chat ---------------------------------------------------------------------------

TEST(OpenAiRequest, ChatMessages) {
  const OpenAiCall c = must_parse(R"({"messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "system", "content": "Second system."},
      {"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                   {"type": "text", "text": "world"}], "name": "ann"},
      {"role": "assistant", "content": null},
      {"role": "user", "content": ""}]})",
                                  /*chat=*/true);
  EXPECT_TRUE(c.chat);
  EXPECT_EQ(c.call.id_prefix, "chatcmpl");
  ASSERT_EQ(c.call.prompts.size(), 1u);
  EXPECT_EQ(c.call.prompts[0].kind, PromptInput::Kind::Chat);
  const std::vector<model::ChatMessage>& m = messages_of(c);
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].role, "system");  // developer is OpenAI's new name for system
  EXPECT_EQ(m[0].content, "Be brief.");
  EXPECT_EQ(m[1].role, "system");
  EXPECT_EQ(m[2].role, "user");
  EXPECT_EQ(m[2].content, "Hello, world");
  EXPECT_EQ(m[3].role, "assistant");
  EXPECT_EQ(m[3].content, "");
  EXPECT_EQ(m[4].content, "");
  EXPECT_FALSE(c.call.max_tokens.has_value());  // chat: the rest of the context
  EXPECT_EQ(c.logprobs, -1);
}

TEST(OpenAiRequest, ChatLogprobs) {
  const char* user = R"("messages": [{"role": "user", "content": "x"}])";
  auto body = [&](const std::string& extra) { return "{" + std::string(user) + extra + "}"; };

  OpenAiCall c = must_parse(body(R"(, "logprobs": true, "top_logprobs": 5)"), true);
  EXPECT_EQ(c.logprobs, 5);
  EXPECT_EQ(c.call.sampling.logprobs, 5);

  c = must_parse(body(R"(, "logprobs": true)"), true);
  EXPECT_EQ(c.logprobs, 0);  // the chosen token's logprob, no alternatives
  EXPECT_EQ(c.call.sampling.logprobs, 0);

  c = must_parse(body(R"(, "logprobs": true, "top_logprobs": 20)"), true);
  EXPECT_EQ(c.logprobs, 20);

  c = must_parse(body(R"(, "logprobs": false)"), true);
  EXPECT_EQ(c.logprobs, -1);
  EXPECT_EQ(c.call.sampling.logprobs, -1);

  c = must_parse(body(R"(, "logprobs": false, "top_logprobs": null)"), true);
  EXPECT_EQ(c.logprobs, -1);

  EXPECT_EQ(must_fail(body(R"(, "logprobs": false, "top_logprobs": 2)"), true).param,
            "top_logprobs");
  EXPECT_EQ(must_fail(body(R"(, "top_logprobs": 2)"), true).param, "top_logprobs");
  EXPECT_EQ(must_fail(body(R"(, "logprobs": true, "top_logprobs": 21)"), true).param,
            "top_logprobs");
  EXPECT_EQ(must_fail(body(R"(, "logprobs": 3)"), true).param, "logprobs");
}

TEST(OpenAiRequest, ChatAcceptsEmptyToolsAndTextResponseFormat) {
  const OpenAiCall c = must_parse(R"({"messages": [{"role": "user", "content": "x"}],
      "tools": [], "response_format": {"type": "text"}, "max_completion_tokens": 4})",
                                  true);
  EXPECT_EQ(c.call.max_tokens, 4);
}

// --- bad bodies ---------------------------------------------------------------------

struct BadBody {
  const char* name;
  bool chat;
  const char* body;
  const char* param;
};

void PrintTo(const BadBody& b, std::ostream* os) { *os << b.name; }

class OpenAiRequestBad : public ::testing::TestWithParam<BadBody> {};

TEST_P(OpenAiRequestBad, IsAnErrorNamingTheField) {
  const BadBody& b = GetParam();
  const ApiError e = must_fail(b.body, b.chat);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.param, b.param) << e.message;
  EXPECT_FALSE(e.message.empty());
  EXPECT_EQ(e.code, "");
}

constexpr bool kCompletions = false;
constexpr bool kChat = true;

// clang-format off
INSTANTIATE_TEST_SUITE_P(Table, OpenAiRequestBad, ::testing::Values(
  // not a JSON object
  BadBody{"empty", kCompletions, "", ""},
  BadBody{"invalid_json", kCompletions, "{prompt: 'x'}", ""},
  BadBody{"truncated", kCompletions, R"({"prompt": "x", "max_tok)", ""},
  BadBody{"array", kCompletions, R"([{"prompt": "x"}])", ""},
  BadBody{"null", kCompletions, "null", ""},
  BadBody{"number", kChat, "42", ""},
  BadBody{"nan", kCompletions, R"({"prompt": "x", "temperature": NaN})", ""},
  BadBody{"invalid_utf8", kCompletions, "{\"prompt\": \"\xff\xfe\"}", ""},
  BadBody{"lone_surrogate", kCompletions, R"({"prompt": "\ud800"})", ""},
  BadBody{"trailing_garbage", kCompletions, R"({"prompt": "x"} {})", ""},
  // prompt
  BadBody{"prompt_missing", kCompletions, R"({"max_tokens": 2})", "prompt"},
  BadBody{"prompt_null", kCompletions, R"({"prompt": null})", "prompt"},
  BadBody{"prompt_number", kCompletions, R"({"prompt": 42})", "prompt"},
  BadBody{"prompt_empty", kCompletions, R"({"prompt": ""})", "prompt"},
  BadBody{"prompt_empty_list", kCompletions, R"({"prompt": []})", "prompt"},
  BadBody{"prompt_object", kCompletions, R"({"prompt": {"text": "x"}})", "prompt"},
  BadBody{"prompt_ids_then_text", kCompletions, R"({"prompt": [1, "a"]})", "prompt"},
  BadBody{"prompt_float_id", kCompletions, R"({"prompt": [1, 2.5]})", "prompt"},
  BadBody{"prompt_negative_id", kCompletions, R"({"prompt": [-1]})", "prompt"},
  BadBody{"prompt_id_above_int32", kCompletions, R"({"prompt": [2147483648]})", "prompt"},
  BadBody{"prompt_id_2_64", kCompletions, R"({"prompt": [18446744073709551615]})", "prompt"},
  BadBody{"prompt_empty_inner", kCompletions, R"({"prompt": [[1], []]})", "prompt"},
  BadBody{"prompt_too_deep", kCompletions, R"({"prompt": [[[1]]]})", "prompt"},
  BadBody{"prompt_list_with_empty_string", kCompletions, R"({"prompt": ["a", ""]})", "prompt"},
  BadBody{"prompt_list_with_number", kCompletions, R"({"prompt": ["a", 1]})", "prompt"},
  // top-level types and ranges
  BadBody{"model_number", kCompletions, R"({"prompt": "x", "model": 5})", "model"},
  BadBody{"stream_string", kCompletions, R"({"prompt": "x", "stream": "yes"})", "stream"},
  BadBody{"stream_options_string", kCompletions, R"({"prompt": "x", "stream_options": "u"})", "stream_options"},
  BadBody{"stream_options_unknown", kCompletions, R"({"prompt": "x", "stream_options": {"foo": 1}})", "stream_options"},
  BadBody{"user_number", kCompletions, R"({"prompt": "x", "user": 5})", "user"},
  BadBody{"n_zero", kCompletions, R"({"prompt": "x", "n": 0})", "n"},
  BadBody{"n_float", kCompletions, R"({"prompt": "x", "n": 1.5})", "n"},
  BadBody{"n_huge", kCompletions, R"({"prompt": "x", "n": 2000000})", "n"},
  BadBody{"best_of_differs", kCompletions, R"({"prompt": "x", "n": 2, "best_of": 3})", "best_of"},
  BadBody{"max_tokens_string", kCompletions, R"({"prompt": "x", "max_tokens": "8"})", "max_tokens"},
  BadBody{"max_tokens_zero", kCompletions, R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
  BadBody{"max_tokens_negative", kCompletions, R"({"prompt": "x", "max_tokens": -1})", "max_tokens"},
  BadBody{"max_tokens_above_int32", kCompletions, R"({"prompt": "x", "max_tokens": 2147483648})", "max_tokens"},
  BadBody{"max_tokens_2_64", kCompletions, R"({"prompt": "x", "max_tokens": 18446744073709551615})", "max_tokens"},
  BadBody{"max_tokens_2_70", kCompletions, R"({"prompt": "x", "max_tokens": 1180591620717411303424})", "max_tokens"},
  BadBody{"max_tokens_float", kCompletions, R"({"prompt": "x", "max_tokens": 2.0})", "max_tokens"},
  BadBody{"max_tokens_bool", kCompletions, R"({"prompt": "x", "max_tokens": true})", "max_tokens"},
  BadBody{"max_completion_tokens_zero", kCompletions, R"({"prompt": "x", "max_completion_tokens": 0})", "max_completion_tokens"},
  BadBody{"temperature_string", kCompletions, R"({"prompt": "x", "temperature": "0.5"})", "temperature"},
  BadBody{"temperature_huge", kCompletions, R"({"prompt": "x", "temperature": 1e31})", "temperature"},
  BadBody{"top_p_bool", kCompletions, R"({"prompt": "x", "top_p": true})", "top_p"},
  BadBody{"top_k_below_minus_one", kCompletions, R"({"prompt": "x", "top_k": -5})", "top_k"},
  BadBody{"top_k_float", kCompletions, R"({"prompt": "x", "top_k": 5.5})", "top_k"},
  BadBody{"min_p_string", kCompletions, R"({"prompt": "x", "min_p": "0"})", "min_p"},
  BadBody{"presence_penalty_huge", kCompletions, R"({"prompt": "x", "presence_penalty": -1e38})", "presence_penalty"},
  BadBody{"frequency_penalty_list", kCompletions, R"({"prompt": "x", "frequency_penalty": []})", "frequency_penalty"},
  BadBody{"repetition_penalty_string", kCompletions, R"({"prompt": "x", "repetition_penalty": "1"})", "repetition_penalty"},
  BadBody{"seed_float", kCompletions, R"({"prompt": "x", "seed": 1.5})", "seed"},
  BadBody{"seed_2_64", kCompletions, R"({"prompt": "x", "seed": 18446744073709551616})", "seed"},
  BadBody{"logit_bias_list", kCompletions, R"({"prompt": "x", "logit_bias": [[1, 2]]})", "logit_bias"},
  BadBody{"logit_bias_key_abc", kCompletions, R"({"prompt": "x", "logit_bias": {"abc": 1}})", "logit_bias"},
  BadBody{"logit_bias_key_negative", kCompletions, R"({"prompt": "x", "logit_bias": {"-1": 1}})", "logit_bias"},
  BadBody{"logit_bias_key_trailing", kCompletions, R"({"prompt": "x", "logit_bias": {"5x": 1}})", "logit_bias"},
  BadBody{"logit_bias_key_above_int32", kCompletions, R"({"prompt": "x", "logit_bias": {"2147483648": 1}})", "logit_bias"},
  BadBody{"logit_bias_key_huge", kCompletions, R"({"prompt": "x", "logit_bias": {"99999999999999999999999": 1}})", "logit_bias"},
  BadBody{"logit_bias_key_empty", kCompletions, R"({"prompt": "x", "logit_bias": {"": 1}})", "logit_bias"},
  BadBody{"logit_bias_value_string", kCompletions, R"({"prompt": "x", "logit_bias": {"5": "up"}})", "logit_bias"},
  BadBody{"logprobs_too_many", kCompletions, R"({"prompt": "x", "logprobs": 21})", "logprobs"},
  BadBody{"logprobs_negative", kCompletions, R"({"prompt": "x", "logprobs": -1})", "logprobs"},
  BadBody{"logprobs_bool", kCompletions, R"({"prompt": "x", "logprobs": true})", "logprobs"},
  BadBody{"echo", kCompletions, R"({"prompt": "x", "echo": true})", "echo"},
  BadBody{"suffix", kCompletions, R"({"prompt": "x", "suffix": "!"})", "suffix"},
  // stop and the vLLM extras
  BadBody{"stop_number", kCompletions, R"({"prompt": "x", "stop": 5})", "stop"},
  BadBody{"stop_list_with_number", kCompletions, R"({"prompt": "x", "stop": ["a", 1]})", "stop"},
  BadBody{"stop_token_ids_string", kCompletions, R"({"prompt": "x", "stop_token_ids": "1"})", "stop_token_ids"},
  BadBody{"stop_token_ids_negative", kCompletions, R"({"prompt": "x", "stop_token_ids": [-1]})", "stop_token_ids"},
  BadBody{"ignore_eos_string", kCompletions, R"({"prompt": "x", "ignore_eos": "yes"})", "ignore_eos"},
  BadBody{"min_tokens_negative", kCompletions, R"({"prompt": "x", "min_tokens": -1})", "min_tokens"},
  BadBody{"skip_special_tokens_number", kCompletions, R"({"prompt": "x", "skip_special_tokens": 0})", "skip_special_tokens"},
  BadBody{"include_stop_str_string", kCompletions, R"({"prompt": "x", "include_stop_str_in_output": "no"})", "include_stop_str_in_output"},
  // lagkv (ranges of the policy itself are checked by LagPolicy::from_fields in the core)
  BadBody{"lagkv_string", kCompletions, R"({"prompt": "x", "lagkv": "on"})", "lagkv"},
  BadBody{"lagkv_number", kCompletions, R"({"prompt": "x", "lagkv": 1})", "lagkv"},
  BadBody{"lagkv_list", kCompletions, R"({"prompt": "x", "lagkv": [16, 128]})", "lagkv"},
  BadBody{"lagkv_unknown_key", kCompletions, R"({"prompt": "x", "lagkv": {"window": 4}})", "lagkv"},
  // chat
  BadBody{"messages_missing", kChat, R"({"max_tokens": 2})", "messages"},
  BadBody{"messages_string", kChat, R"({"messages": "hi"})", "messages"},
  BadBody{"messages_empty", kChat, R"({"messages": []})", "messages"},
  BadBody{"message_string", kChat, R"({"messages": ["hi"]})", "messages[0]"},
  BadBody{"message_unknown_field", kChat, R"({"messages": [{"role": "user", "content": "x", "mood": 1}]})", "messages[0]"},
  BadBody{"message_tool_calls", kChat, R"({"messages": [{"role": "assistant", "content": "x", "tool_calls": []}]})", "messages[0]"},
  BadBody{"role_missing", kChat, R"({"messages": [{"content": "x"}]})", "messages[0].role"},
  BadBody{"role_null", kChat, R"({"messages": [{"role": null, "content": "x"}]})", "messages[0].role"},
  BadBody{"role_number", kChat, R"({"messages": [{"role": 1, "content": "x"}]})", "messages[0].role"},
  BadBody{"role_wizard", kChat, R"({"messages": [{"role": "wizard", "content": "x"}]})", "messages[0].role"},
  BadBody{"role_tool", kChat, R"({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "x"}]})", "messages[1].role"},
  BadBody{"role_case", kChat, R"({"messages": [{"role": "User", "content": "x"}]})", "messages[0].role"},
  BadBody{"content_missing", kChat, R"({"messages": [{"role": "user"}]})", "messages[0].content"},
  BadBody{"content_number", kChat, R"({"messages": [{"role": "user", "content": 42}]})", "messages[0].content"},
  BadBody{"content_object", kChat, R"({"messages": [{"role": "user", "content": {"text": "x"}}]})", "messages[0].content"},
  BadBody{"content_image_part", kChat, R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]})", "messages[0].content"},
  BadBody{"content_part_string", kChat, R"({"messages": [{"role": "user", "content": ["x"]}]})", "messages[0].content"},
  BadBody{"content_part_no_type", kChat, R"({"messages": [{"role": "user", "content": [{"text": "x"}]}]})", "messages[0].content"},
  BadBody{"content_part_unknown_key", kChat, R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}]})", "messages[0].content"},
  BadBody{"second_message_content", kChat, R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": 5}]})", "messages[1].content"},
  BadBody{"tools", kChat, R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", "tools"},
  BadBody{"tools_object", kChat, R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", "tools"},
  BadBody{"response_format_json", kChat, R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})", "response_format"},
  BadBody{"response_format_string", kChat, R"({"messages": [{"role": "user", "content": "x"}], "response_format": "text"})", "response_format"},
  BadBody{"chat_sampling_still_checked", kChat, R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})", "temperature"}
), [](const ::testing::TestParamInfo<BadBody>& info) { return std::string(info.param.name); });
// clang-format on

// nlohmann reports a number beyond double as out_of_range (not parse_error): it
// must still be a 400, never an exception out of the parser.
TEST(OpenAiRequest, NumberOverflowIsABadRequest) {
  for (const char* body : {R"({"prompt": "x", "temperature": 1e400})",
                           R"({"prompt": "x", "max_tokens": -1e400})"}) {
    SCOPED_TRACE(body);
    std::optional<ApiError> e;
    EXPECT_NO_THROW(e = must_fail(body, false));
    if (!e) continue;
    EXPECT_EQ(e->http_status, 400);
    EXPECT_EQ(e->type, "invalid_request_error");
    EXPECT_THAT(e->param, AnyOf(Eq(""), Eq("temperature"), Eq("max_tokens")));
  }
}

TEST(OpenAiRequest, InvalidJsonMessageSaysSo) {
  EXPECT_THAT(must_fail("{", false).message, HasSubstr("not valid JSON"));
  EXPECT_THAT(must_fail("[1]", false).message, HasSubstr("JSON object"));
}

// Fields inside an object we define are named with their path (as OpenAI names
// "messages[0].role"), never as a bare key that is not a request field.
TEST(OpenAiRequest, NestedFieldErrorsNameTheirParent) {
  EXPECT_THAT(must_fail(R"({"prompt": "x", "lagkv": {"lag": 0}})", false).param,
              AnyOf(Eq("lagkv"), Eq("lagkv.lag")));
  EXPECT_THAT(must_fail(R"({"prompt": "x", "lagkv": {"sink": -1}})", false).param,
              AnyOf(Eq("lagkv"), Eq("lagkv.sink")));
  EXPECT_THAT(must_fail(R"({"prompt": "x", "lagkv": {"keep": "3"}})", false).param,
              AnyOf(Eq("lagkv"), Eq("lagkv.keep")));
  EXPECT_THAT(must_fail(R"({"prompt": "x", "lagkv": {"ratio": "half"}})", false).param,
              AnyOf(Eq("lagkv"), Eq("lagkv.ratio")));
  EXPECT_THAT(must_fail(R"({"prompt": "x", "lagkv": {"score_v_weight": 1e31}})", false).param,
              AnyOf(Eq("lagkv"), Eq("lagkv.score_v_weight")));
  EXPECT_THAT(
      must_fail(R"({"prompt": "x", "stream_options": {"include_usage": "yes"}})", false).param,
      AnyOf(Eq("stream_options"), Eq("stream_options.include_usage")));
  EXPECT_EQ(must_fail(R"({"messages": [{"role": "user", "content": [{"type": 5}]}]})", true).param,
            "messages[0].content");
  EXPECT_EQ(must_fail(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})",
                      true)
                .param,
            "messages[0].content");
  EXPECT_EQ(must_fail(R"({"messages": [{"role": "user", "content": "x"}],
                          "response_format": {"type": 5}})",
                      true)
                .param,
            "response_format");
}

// "name" is a field OpenAI defines as a string; any other type is an error.
TEST(OpenAiRequest, MessageNameMustBeAString) {
  EXPECT_THAT(must_fail(R"({"messages": [{"role": "user", "content": "x", "name": 5}]})", true)
                  .param,
              AnyOf(Eq("messages[0]"), Eq("messages[0].name")));
}

// --- param_of -----------------------------------------------------------------------

TEST(ParamOf, FirstWordWhenItIsARequestField) {
  EXPECT_EQ(param_of("max_tokens must be at least 1"), "max_tokens");
  EXPECT_EQ(param_of("max_tokens: this model's maximum context length is 8192 tokens"),
            "max_tokens");
  EXPECT_EQ(param_of("prompt: this model's maximum context length is 8192 tokens"), "prompt");
  EXPECT_EQ(param_of("prompt token id 1000000 is outside the vocabulary [0, 49152)"), "prompt");
  EXPECT_EQ(param_of("min_tokens must be between 0 and max_tokens"), "min_tokens");
  EXPECT_EQ(param_of("temperature must be in [0, inf), got -1"), "temperature");
  EXPECT_EQ(param_of("top_p must be in (0, 1], got 0"), "top_p");
  EXPECT_EQ(param_of("top_k must be >= -1"), "top_k");
  EXPECT_EQ(param_of("min_p must be in [0, 1], got 2"), "min_p");
  EXPECT_EQ(param_of("presence_penalty must be in [-2, 2], got 5"), "presence_penalty");
  EXPECT_EQ(param_of("frequency_penalty must be in [-2, 2], got -3"), "frequency_penalty");
  EXPECT_EQ(param_of("repetition_penalty must be in (0, inf), got 0"), "repetition_penalty");
  EXPECT_EQ(param_of("logit_bias of token 5 must be in [-100, 100], got 200"), "logit_bias");
  EXPECT_EQ(param_of("logit_bias: token id 49152 is outside the vocabulary"), "logit_bias");
  EXPECT_EQ(param_of("logprobs must be in [-1, 20], got 50"), "logprobs");
  EXPECT_EQ(param_of("top_logprobs needs logprobs: true"), "top_logprobs");
  EXPECT_EQ(param_of("stop: empty stop string"), "stop");
  EXPECT_EQ(param_of("stop_token_ids: token id 1000000 is outside the vocabulary"),
            "stop_token_ids");
  EXPECT_EQ(param_of("seed must be an integer"), "seed");
  EXPECT_EQ(param_of("n must be between 1 and 16"), "n");
  EXPECT_EQ(param_of("lagkv: lagkv policy: ratio=0: must be in (0, 1]"), "lagkv");
  EXPECT_EQ(param_of("messages must not be empty"), "messages");
  EXPECT_EQ(param_of("model"), "model");
}

TEST(ParamOf, EmptyOtherwise) {
  EXPECT_EQ(param_of(""), "");
  EXPECT_EQ(param_of("the prompt has no tokens"), "");
  EXPECT_EQ(param_of("the request needs 12 KV blocks (prompt + max_tokens) but the cache has 4"),
            "");
  EXPECT_EQ(param_of("the server's queue is full (3 requests waiting); retry later"), "");
  EXPECT_EQ(param_of("max_tokens_extra is not a field"), "");  // whole words only
  EXPECT_EQ(param_of("nmax must be"), "");
  EXPECT_EQ(param_of("Temperature must be"), "");  // field names are lower case
  EXPECT_EQ(param_of(" max_tokens must be"), "");  // the first word, not a later one
  EXPECT_EQ(param_of("generation failed: max_tokens"), "");
}

}  // namespace
}  // namespace lagserve::server
