// export_hf on the default model (SmolLM2-135M GGUF): the synthesized
// tokenizer.json encodes like the GGUF tokenizer and the fp32 weights come
// back bitwise. Skips when the model is not cached; needs ~540 MB in /tmp.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/kv/lag_policy.h"
#include "tests/trainer/export/export_checks.h"
#include "trainer/export/hf_export.h"

namespace lagserve::trainer {
namespace {

std::string long_text() {
  std::string text;
  for (int i = 0; i < 60; ++i) {
    text += "Paragraph " + std::to_string(i) +
            ": LagKV keeps the sink, scores each lag partition against the next, and keeps the "
            "top-k tokens; it's cheap (O(L·d)), doesn't need attention weights, and works "
            "with FlashAttention.\n";
  }
  return text;
}

const std::vector<std::string>& texts() {
  static const std::vector<std::string> t = {
      "Hello, world!",
      "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
      "<|im_start|>system\nYou are helpful.<|im_end|>",
      "<|endoftext|><|im_end|><repo_name>lagserve<file_sep>main.cpp",
      "Numbers: 1234567890, 3.14159, -0.5e-10, 1,000,000 and 2025-01-31T12:34:56Z",
      "Newlines\n\nand\r\nCRLF\n\n\n   indented\n\ttabbed",
      "Emoji 🙂😂🚀👍🏽🇯🇵 and ZWJ 👩‍👩‍👧‍👦",
      "Unicode: naïve café résumé — Ελληνικά, Русский, العربية, עברית, हिन्दी, 中文, 日本語, 한국어",
      "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
      "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v[0] != 1; }",
      "{\"key\": [1, 2, {\"nested\": null}], \"url\": \"https://example.com/a?b=c&d=e\"}",
      "it's we're they've I'd you'll IT'S WE'RE",
      "    ",
      " leading space and trailing space ",
      "ALL CAPS SENTENCE WITH MIXED case AnD CamelCaseIdentifiers snake_case_names",
      "Math: ∑_{i=1}^{n} i² = n(n+1)(2n+1)/6, ∀x ∈ ℝ, x² ≥ 0",
      "a",
      "",
      "<|im_start|>",
      long_text(),
  };
  return t;
}

TEST(HfExportDefaultModel, TokenizerAndWeightsRoundTrip) {
  auto path = model::resolve_model_path("default");
  if (!path.ok()) GTEST_SKIP() << path.status();
  auto base = model::load_model(*path);
  ASSERT_TRUE(base.ok()) << base.status();

  testing::TempDir dir("default_model");
  auto policy = kv::LagPolicy::parse("sink=16,lag=128,keep=32,skip_layers=0;1");
  ASSERT_TRUE(policy.ok()) << policy.status();
  absl::Status st = export_hf(dir.str(), **base, (*base)->weights, *policy);
  ASSERT_TRUE(st.ok()) << st;

  // The tokenizer alone first: a mismatch shows without the weights' noise.
  const std::filesystem::path out = dir.path();
  auto tokenizer = model::Tokenizer::from_tokenizer_json((out / "tokenizer.json").string(),
                                                         (out / "tokenizer_config.json").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  testing::expect_same_tokenizer(**tokenizer, *(*base)->tokenizer, texts());
  // The special tokens really are single ids.
  EXPECT_EQ((*tokenizer)->encode("<|im_start|>user", false),
            (std::vector<int32_t>{1, (*base)->tokenizer->encode("user", false)[0]}));

  // And like Hugging Face `tokenizers` on the model's own tokenizer.json
  // (tests/golden/tokenizer/smollm2_ids.jsonl, ~400 texts).
  std::ifstream golden(std::string(LAGSERVE_SOURCE_DIR) + "/tests/golden/tokenizer/smollm2_ids.jsonl");
  int n_rows = 0, n_bad = 0;
  for (std::string line; std::getline(golden, line) && n_bad <= 10; ++n_rows) {
    const nlohmann::json row = nlohmann::json::parse(line);
    const std::string text = row["text"].get<std::string>();
    const auto ids = (*tokenizer)->encode(text, (*tokenizer)->add_bos_default());
    EXPECT_EQ(ids, row["ids"].get<std::vector<int32_t>>()) << "text: " << row["text"].dump();
    n_bad += ids != row["ids"].get<std::vector<int32_t>>();
  }
  EXPECT_GE(n_rows, 300);

  auto back = model::load_model(dir.str());
  ASSERT_TRUE(back.ok()) << back.status();
  testing::expect_config_equal((*back)->config, (*base)->config);
  testing::expect_weights_equal((*back)->weights, (*base)->weights);
  EXPECT_EQ((*back)->chat_template, (*base)->chat_template);
  EXPECT_FALSE((*back)->chat_template.empty());

  std::ifstream in(out / "config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto read_policy = kv::lag_policy_from_config_json(ss.str());
  ASSERT_TRUE(read_policy.ok()) << read_policy.status();
  ASSERT_TRUE(read_policy->has_value());
  EXPECT_EQ(**read_policy, *policy);
}

}  // namespace
}  // namespace lagserve::trainer
