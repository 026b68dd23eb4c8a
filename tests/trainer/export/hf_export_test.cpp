// export_hf on the tiny golden models: export -> load_model gives back the same
// weights (bitwise), config, chat template, tokenizer and LagKV policy.
#include "trainer/export/hf_export.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/kv/lag_policy.h"
#include "engine/model/safetensors.h"
#include "tests/trainer/export/export_checks.h"

namespace lagserve::trainer {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

const fs::path kModels = fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models";

const std::vector<std::string> kTexts = {
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "héllo wörld — naïve café, 日本語のテキスト, Привет мир",
    "emoji: 🙂🚀👍🏽 and flags 🇫🇷",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>plain<|im_end|>",
    "digits 1234567890 3.14159 -42 1e-5 0x1F",
    "def f(x):\n    return [i ** 2 for i in range(x) if i % 2 == 0]\n",
    "  leading spaces\n\n\ttabs\r\n and trailing   ",
    "it's they're we've I'm you'll he'd DON'T",
    "",
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(read_file(p)); }

std::unique_ptr<model::Model> load(const std::string& path) {
  auto m = model::load_model(path);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

kv::LagPolicy test_policy() {
  auto p = kv::LagPolicy::parse("sink=4,lag=8,keep=3,score_v_weight=0.1,skip_layers=1");
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

class TinyExport : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyExport, LoadsBackIdentical) {
  auto base = load((kModels / GetParam()).string());
  ASSERT_NE(base, nullptr);
  TempDir dir("tiny_" + GetParam());
  const kv::LagPolicy policy = test_policy();
  absl::Status st = export_hf(dir.str("out"), *base, base->weights, policy);
  ASSERT_TRUE(st.ok()) << st;

  auto back = load(dir.str("out"));
  ASSERT_NE(back, nullptr);
  testing::expect_config_equal(back->config, base->config);
  testing::expect_weights_equal(back->weights, base->weights);
  EXPECT_EQ(back->chat_template, base->chat_template);
  EXPECT_FALSE(back->chat_template.empty());
  testing::expect_same_tokenizer(*back->tokenizer, *base->tokenizer, kTexts);

  const std::string config_text = read_file(dir.path() / "out/config.json");
  auto read_policy = kv::lag_policy_from_config_json(config_text);
  ASSERT_TRUE(read_policy.ok()) << read_policy.status();
  ASSERT_TRUE(read_policy->has_value());
  EXPECT_EQ(**read_policy, policy);

  const nlohmann::json config = nlohmann::json::parse(config_text);
  const bool qwen2 = base->config.arch == model::Arch::Qwen2;
  EXPECT_EQ(config["architectures"][0], qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
  EXPECT_EQ(config["model_type"], qwen2 ? "qwen2" : "llama");
  EXPECT_EQ(config["torch_dtype"], "float32");
  EXPECT_EQ(config["tie_word_embeddings"], base->config.tied_embeddings);
  EXPECT_EQ(config["rms_norm_eps"].get<double>(), 1e-5);  // shortest form, not 9.99999974e-06

  auto st_model = model::SafetensorsModel::open_dir(dir.str("out"));
  ASSERT_TRUE(st_model.ok()) << st_model.status();
  EXPECT_EQ((*st_model)->find("lm_head.weight") != nullptr, !base->config.tied_embeddings);
  EXPECT_EQ((*st_model)->find("model.layers.0.self_attn.q_proj.bias") != nullptr, qwen2);
  const size_t per_layer = qwen2 ? 12 : 9;
  EXPECT_EQ((*st_model)->tensors().size(),
            2 + per_layer * base->config.n_layers + (base->config.tied_embeddings ? 0 : 1));

  // The tokenizer is copied; the template and specials are in tokenizer_config.
  EXPECT_EQ(read_file(dir.path() / "out/tokenizer.json"),
            read_file(kModels / GetParam() / "tokenizer.json"));
  const nlohmann::json tok_config = read_json(dir.path() / "out/tokenizer_config.json");
  EXPECT_EQ(tok_config["chat_template"], base->chat_template);
  EXPECT_EQ(tok_config["eos_token"], "<|endoftext|>");
  EXPECT_TRUE(tok_config.contains("add_bos_token"));
  EXPECT_TRUE(fs::exists(dir.path() / "out/special_tokens_map.json"));
  EXPECT_EQ(read_file(dir.path() / "out/generation_config.json"),
            read_file(kModels / GetParam() / "generation_config.json"));
  for (const auto& entry : fs::directory_iterator(dir.path() / "out")) {
    EXPECT_NE(entry.path().extension(), ".tmp") << entry.path();
  }
}

TEST_P(TinyExport, DisabledPolicyWritesFalse) {
  auto base = load((kModels / GetParam()).string());
  ASSERT_NE(base, nullptr);
  TempDir dir("off_" + GetParam());
  ASSERT_TRUE(export_hf(dir.str(), *base, base->weights, kv::LagPolicy{}).ok());
  const std::string config_text = read_file(dir.path() / "config.json");
  EXPECT_EQ(nlohmann::json::parse(config_text)["lagkv"], false);
  auto read_policy = kv::lag_policy_from_config_json(config_text);
  ASSERT_TRUE(read_policy.ok()) << read_policy.status();
  ASSERT_TRUE(read_policy->has_value());
  EXPECT_FALSE((*read_policy)->enabled);
}

TEST_P(TinyExport, Bf16WeightsAreRoundedCopies) {
  auto base = load((kModels / GetParam()).string());
  ASSERT_NE(base, nullptr);
  TempDir dir("bf16_" + GetParam());
  ASSERT_TRUE(export_hf(dir.str(), *base, base->weights, test_policy(), {SaveDtype::BF16}).ok());
  EXPECT_EQ(read_json(dir.path() / "config.json")["torch_dtype"], "bfloat16");
  auto back = load(dir.str());
  ASSERT_NE(back, nullptr);
  auto rounded = [](std::vector<float> v) {
    for (float& x : v) {
      const uint32_t bits = static_cast<uint32_t>(f32_to_bf16_bits(x)) << 16;
      std::memcpy(&x, &bits, 4);
    }
    return v;
  };
  testing::expect_bitwise_equal(back->weights.tok_embd, rounded(base->weights.tok_embd),
                                "tok_embd");
  testing::expect_bitwise_equal(back->weights.layers[1].wqkv,
                                rounded(base->weights.layers[1].wqkv), "wqkv");
  testing::expect_bitwise_equal(back->weights.layers[0].bqkv,
                                rounded(base->weights.layers[0].bqkv), "bqkv");
  testing::expect_bitwise_equal(back->weights.layers[0].w_gate_up,
                                rounded(base->weights.layers[0].w_gate_up), "w_gate_up");
}

TEST_P(TinyExport, WritesTheGivenWeightsNotTheBase) {
  auto base = load((kModels / GetParam()).string());
  ASSERT_NE(base, nullptr);
  model::ModelWeights trained = base->weights;
  for (size_t i = 0; i < trained.tok_embd.size(); i += 7) trained.tok_embd[i] += 0.25f;
  for (model::LayerWeights& L : trained.layers) {
    // One marker per fused part: q, k and v rows; gate and up rows.
    const size_t d = base->config.d_model, q = base->config.q_dim(), kv = base->config.kv_dim();
    L.wqkv[0] = 1.f;
    L.wqkv[q * d] = 2.f;
    L.wqkv[(q + kv) * d] = 3.f;
    if (!L.bqkv.empty()) L.bqkv[q + kv] = 4.f;
    L.w_gate_up[base->config.d_ff * d] = 5.f;
    L.w_down.back() = 6.f;
  }
  TempDir dir("trained_" + GetParam());
  ASSERT_TRUE(export_hf(dir.str(), *base, trained, test_policy()).ok());
  auto back = load(dir.str());
  ASSERT_NE(back, nullptr);
  testing::expect_weights_equal(back->weights, trained);
}

TEST_P(TinyExport, ExportsUntiedAndTiedHeadsAsGiven) {
  auto base = load((kModels / GetParam()).string());
  ASSERT_NE(base, nullptr);
  model::ModelWeights w = base->weights;
  const bool was_tied = w.output.empty();
  if (was_tied) {
    w.output = w.tok_embd;
    w.output[0] += 1.f;
  } else {
    w.output.clear();
  }
  TempDir dir("head_" + GetParam());
  ASSERT_TRUE(export_hf(dir.str(), *base, w, test_policy()).ok());
  auto back = load(dir.str());
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->config.tied_embeddings, !was_tied);
  testing::expect_weights_equal(back->weights, w);
}

TEST_P(TinyExport, OverwritesAnEarlierExport) {
  auto base = load((kModels / GetParam()).string());
  ASSERT_NE(base, nullptr);
  TempDir dir("again_" + GetParam());
  ASSERT_TRUE(export_hf(dir.str(), *base, base->weights, test_policy()).ok());
  ASSERT_TRUE(export_hf(dir.str(), *base, base->weights, kv::LagPolicy{}).ok());
  EXPECT_EQ(read_json(dir.path() / "config.json")["lagkv"], false);
  auto back = load(dir.str());
  ASSERT_NE(back, nullptr);
  testing::expect_weights_equal(back->weights, base->weights);
}

INSTANTIATE_TEST_SUITE_P(Models, TinyExport, ::testing::Values("tiny-llama", "tiny-qwen2"),
                         [](const auto& info) {
                           return info.param == "tiny-llama" ? "llama" : "qwen2";
                         });

TEST(HfExport, FromGgufSynthesizesTheTokenizer) {
  auto base = load((kModels / "tiny-llama.gguf").string());
  ASSERT_NE(base, nullptr);
  TempDir dir("gguf");
  absl::Status st = export_hf(dir.str(), *base, base->weights, test_policy());
  ASSERT_TRUE(st.ok()) << st;
  auto back = load(dir.str());
  ASSERT_NE(back, nullptr);
  testing::expect_weights_equal(back->weights, base->weights);
  testing::expect_same_tokenizer(*back->tokenizer, *base->tokenizer, kTexts);
  EXPECT_EQ(back->chat_template, base->chat_template);
  // Its RoPE table (llama3 scaling as GGUF rope_freqs divisors) comes back
  // through a fitted rope_scaling to within 1e-6.
  ASSERT_EQ(back->config.rope_inv_freq.size(), base->config.rope_inv_freq.size());
  for (size_t i = 0; i < base->config.rope_inv_freq.size(); ++i) {
    EXPECT_NEAR(back->config.rope_inv_freq[i], base->config.rope_inv_freq[i],
                1e-6 * base->config.rope_inv_freq[i])
        << i;
  }
  EXPECT_EQ(read_json(dir.path() / "config.json")["rope_scaling"]["rope_type"], "llama3");
  const nlohmann::json tokenizer = read_json(dir.path() / "tokenizer.json");
  EXPECT_EQ(tokenizer["model"]["type"], "BPE");
  EXPECT_EQ(tokenizer["added_tokens"].size(), 3u);
  EXPECT_EQ(tokenizer["added_tokens"][1]["content"], "<|im_start|>");
  EXPECT_EQ(tokenizer["added_tokens"][1]["special"], true);
}

TEST(HfExport, RejectsWeightsOfTheWrongShape) {
  auto base = load((kModels / "tiny-qwen2").string());
  ASSERT_NE(base, nullptr);
  TempDir dir("shape");
  model::ModelWeights w = base->weights;
  w.layers[1].w_down.pop_back();
  absl::Status st = export_hf(dir.str("out"), *base, w, test_policy());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("layer 1 w_down"), std::string::npos) << st;
  EXPECT_FALSE(fs::exists(dir.path() / "out"));
  w = base->weights;
  w.layers.pop_back();
  EXPECT_EQ(export_hf(dir.str("out"), *base, w, test_policy()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HfExport, RejectsAPolicyTheModelCannotHave) {
  auto base = load((kModels / "tiny-llama").string());
  ASSERT_NE(base, nullptr);
  TempDir dir("policy");
  kv::LagPolicy policy = test_policy();
  policy.skip_layers = {0, 2};  // the model has 2 layers
  absl::Status st = export_hf(dir.str(), *base, base->weights, policy);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("layer 2"), std::string::npos) << st;
  policy = test_policy();
  policy.keep = policy.lag + 1;
  EXPECT_EQ(export_hf(dir.str(), *base, base->weights, policy).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HfExport, RopeScalingItCannotExpressIsUnimplemented) {
  auto base = load((kModels / "tiny-qwen2").string());
  ASSERT_NE(base, nullptr);
  base->config.rope_inv_freq[3] *= 1.01f;  // no scaling rule does only this
  TempDir dir("rope");
  absl::Status st = export_hf(dir.str("out"), *base, base->weights, test_policy());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(st.message().find("RoPE"), std::string::npos) << st;
  EXPECT_NE(st.message().find(base->source), std::string::npos) << st;
  EXPECT_FALSE(fs::exists(dir.path() / "out"));
}

}  // namespace
}  // namespace lagserve::trainer
