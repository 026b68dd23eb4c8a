// The lagserve binary as a user runs it: bad model files give one error line
// and exit status 1 (never a crash); generate streams the same greedy text as
// transformers on the default model; tokenize prints Hugging Face's ids.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/model/model.h"
#include "tests/common/cli_run.h"

namespace {

namespace fs = std::filesystem;
const fs::path kSource(LAGSERVE_SOURCE_DIR);
const fs::path kBinary = fs::path(LAGSERVE_BINARY_DIR) / "server/lagserve";

using lagserve::testing_util::CliRun;
using lagserve::testing_util::slurp;

CliRun run(const std::string& args) { return lagserve::testing_util::run_cli(kBinary, args); }

void expect_one_error_line(const CliRun& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("lagserve: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lagserve_cli_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_ / name, std::ios::binary) << bytes;
    return dir_ / name;
  }
  fs::path dir_;
};

TEST_F(Cli, TruncatedGgufIsOneErrorLine) {
  const std::string good = slurp(kSource / "tests/golden/models/tiny-llama.gguf");
  for (size_t cut : {size_t{3}, size_t{20}, good.size() / 3, good.size() - 1}) {
    SCOPED_TRACE(cut);
    const auto p = write("cut.gguf", good.substr(0, cut));
    expect_one_error_line(run("generate --model " + p.string() + " --max-tokens 2"), "cut.gguf");
  }
}

TEST_F(Cli, NotAModelIsOneErrorLine) {
  const auto p = write("text.gguf", "this is not a gguf file at all, just text\n");
  expect_one_error_line(run("generate --model " + p.string()), "text.gguf");
  expect_one_error_line(run("tokenize --model " + (dir_ / "missing.gguf").string() + " hi"),
                        "missing.gguf");
}

// Byte-patched copies of the tiny GGUF: wrong versions, unknown architecture,
// a tensor renamed away, a tensor offset pointing past the end of the file.
TEST_F(Cli, BrokenGgufFilesAreOneErrorLine) {
  const std::string good = slurp(kSource / "tests/golden/models/tiny-llama.gguf");
  auto patched = [&](size_t at, const std::string& bytes) {
    std::string s = good;
    s.replace(at, bytes.size(), bytes);
    return s;
  };
  auto find = [&](const std::string& needle) {
    const size_t at = good.find(needle);
    EXPECT_NE(at, std::string::npos) << needle;
    return at;
  };
  const std::string arch_head =
      "general.architecture" + std::string("\x08\0\0\0\x05\0\0\0\0\0\0\0", 12);
  const size_t last_name = good.rfind("blk.1.ffn_down.weight");
  // After the last tensor name: n_dims (u32), 2 dims (u64 each), type (u32), offset (u64).
  const size_t last_offset = last_name + std::string("blk.1.ffn_down.weight").size() + 4 + 16 + 4;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {patched(4, std::string("\x01\0\0\0", 4)), "version"},
      {patched(4, std::string("\x63\0\0\0", 4)), "version"},
      {patched(find(arch_head) + arch_head.size(), "llamb"), "unknown architecture"},
      {patched(find("blk.0.attn_q.weight"), "blk.0.attn_x.weight"), "missing tensor"},
      {patched(last_offset, std::string("\0\0\0\0\0\0\x01\0", 8)), "bad.gguf"},
  };
  for (const auto& [bytes, needle] : cases) {
    SCOPED_TRACE(needle);
    const auto p = write("bad.gguf", bytes);
    expect_one_error_line(run("generate --model " + p.string() + " --max-tokens 2"), needle);
  }
}

// Kinds of tests/engine/model/corrupt_model_test.cpp through the binary: an
// empty file, an absurd tensor count (2^60, never allocated), a NaN weight.
TEST_F(Cli, CorruptModelFilesAreOneErrorLine) {
  std::string nan_weight = slurp(kSource / "tests/golden/models/tiny-llama.gguf");
  // blk.0.attn_norm.weight (F32) starts 82208 bytes into the data section,
  // which starts at byte 7104 (after the tensor directory, 32-aligned).
  const uint32_t nan_bits = 0x7fc00000;
  std::memcpy(nan_weight.data() + 7104 + 82208 + 4 * 5, &nan_bits, 4);
  std::string huge_count = slurp(kSource / "tests/golden/models/tiny-llama.gguf");
  const uint64_t count = uint64_t{1} << 60;
  std::memcpy(huge_count.data() + 8, &count, 8);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty file"},
      {huge_count, "header claims 1152921504606846976 tensors"},
      {nan_weight, "tensor 'blk.0.attn_norm.weight' has a NaN at element 5"},
  };
  for (const auto& [bytes, needle] : cases) {
    SCOPED_TRACE(needle);
    const auto p = write("corrupt.gguf", bytes);
    expect_one_error_line(run("generate -m " + p.string() + " --max-tokens 2"), needle);
  }
}

// A Hugging Face folder whose safetensors header lies about a tensor's offsets.
TEST_F(Cli, LyingSafetensorsHeaderIsOneErrorLine) {
  const fs::path d = dir_ / "hf";
  fs::copy(kSource / "tests/golden/models/tiny-llama", d);
  std::string st = slurp(d / "model.safetensors");
  const std::string from = "\"data_offsets\":[0,", to = "\"data_offsets\":[8,";
  const size_t at = st.find(from);
  ASSERT_NE(at, std::string::npos);
  st.replace(at, from.size(), to);  // the first tensor now claims 8 bytes fewer than its shape
  std::ofstream(d / "model.safetensors", std::ios::binary) << st;
  const CliRun r = run("generate --model " + d.string());
  expect_one_error_line(r, "model.safetensors");
  EXPECT_EQ(r.err.find("JSON"), std::string::npos) << "the header must still parse: " << r.err;
}

TEST_F(Cli, GenerateRunsOnTinyModelAndReportsSpeed) {
  const auto r = run("generate --model " + (kSource / "tests/golden/models/tiny-llama").string() +
                     " --prompt 'Paragraph 1.' --max-tokens 8 --ignore-eos --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("decode: 7 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
}

// Batch mode: results in input order, per-request policies, and a trace whose
// every compaction kept exactly k positions of its own partition.
TEST_F(Cli, BatchModeWritesResultsAndEvictionTrace) {
  const auto in = write("in.jsonl",
                        "{\"prompt\": \"Paragraph 1. People have long\", \"max_tokens\": 30, "
                        "\"ignore_eos\": true, \"id\": \"a\"}\n"
                        "\n"
                        "{\"prompt_token_ids\": [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], "
                        "\"max_tokens\": 25, \"ignore_eos\": true, \"lagkv\": \"off\"}\n"
                        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                        "\"max_tokens\": 20, \"ignore_eos\": true, \"temperature\": 0.7, \"seed\": 3, "
                        "\"logprobs\": 2}\n");
  const auto out = dir_ / "out.jsonl", trace = dir_ / "trace.jsonl";
  const CliRun r = run("generate --model " + (kSource / "tests/golden/models/tiny-llama").string() +
                       " --threads 1 --lagkv sink=2,lag=4,keep=1 --prompts " + in.string() +
                       " --output " + out.string() + " --trace-evictions " + trace.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("batch: 3 requests"), std::string::npos) << r.err;
  std::ifstream results(out);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(results, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["id"], "a");
  EXPECT_EQ(rows[1]["id"], "3");  // line number (the blank line counts)
  EXPECT_EQ(rows[2]["id"], "4");
  const int want_tokens[] = {30, 25, 20};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(rows[i]["usage"]["completion_tokens"], want_tokens[i]);
    EXPECT_EQ(rows[i]["finish_reason"], "length");
    EXPECT_EQ(rows[i]["token_ids"].size(), static_cast<size_t>(want_tokens[i]));
  }
  // Logprobs of the sampled tokens, with the top 2 sorted, all <= 0.
  ASSERT_EQ(rows[2]["logprobs"].size(), 20u);
  for (size_t t = 0; t < 20; ++t) {
    const auto& lp = rows[2]["logprobs"][t];
    EXPECT_EQ(lp["token"], rows[2]["token_ids"][t]);
    EXPECT_LE(lp["logprob"].get<double>(), 0.0);
    ASSERT_EQ(lp["top_logprobs"].size(), 2u);
    EXPECT_GE(lp["top_logprobs"][0]["logprob"].get<double>(),
              lp["top_logprobs"][1]["logprob"].get<double>());
    EXPECT_GE(lp["top_logprobs"][0]["logprob"].get<double>(), lp["logprob"].get<double>());
  }
  EXPECT_FALSE(rows[0].contains("logprobs"));
  std::ifstream tf(trace);
  int n_records = 0;
  for (std::string line; std::getline(tf, line);) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_NE(j["request"], "3") << "request 3 ran with the policy off";
    const int p = j["partition"];
    ASSERT_EQ(j["kept"].size(), 1u);
    const int pos = j["kept"][0];
    EXPECT_GE(pos, 2 + 4 * p);
    EXPECT_LT(pos, 2 + 4 * (p + 1));
    ++n_records;
  }
  // Request "a" compresses partitions 0 .. floor((n - 2) / 4) - 2 in both layers and KV heads.
  EXPECT_GT(n_records, 0);
}

// Without --lagkv the checkpoint's policy ("lagkv" in config.json) applies;
// --lagkv off overrides it.
TEST_F(Cli, CheckpointPolicyIsTheDefault) {
  const fs::path d = dir_ / "hf";
  fs::copy(kSource / "tests/golden/models/tiny-llama", d);
  std::string cfg = slurp(d / "config.json");
  cfg.insert(cfg.find('{') + 1, "\n  \"lagkv\": {\"sink\": 2, \"lag\": 4, \"keep\": 1},");
  std::ofstream(d / "config.json") << cfg;
  const auto trace = dir_ / "trace.jsonl";
  const std::string base = "generate --model " + d.string() +
                           " --prompt 'Paragraph 1. People have long written' --max-tokens 20 "
                           "--ignore-eos --threads 1 --trace-evictions " + trace.string();
  CliRun r = run(base);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("KV policy sink=2,lag=4,keep=1"), std::string::npos) << r.err;
  EXPECT_FALSE(slurp(trace).empty());
  r = run(base + " --lagkv off");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("KV policy off"), std::string::npos) << r.err;
  EXPECT_TRUE(slurp(trace).empty());
}

TEST_F(Cli, BatchModeRejectsBadLinesWithOneErrorLine) {
  const auto in = write("bad.jsonl", "{\"prompt\": \"ok\"}\n{\"prompt\": 5}\n");
  expect_one_error_line(run("generate --model " + (kSource / "tests/golden/models/tiny-llama").string() +
                            " --prompts " + in.string()),
                        "line 2");
  const auto in2 = write("bad2.jsonl", "{\"prompt\": \"ok\", \"lagkv\": \"lag=0\"}\n");
  expect_one_error_line(run("generate --model " + (kSource / "tests/golden/models/tiny-llama").string() +
                            " --prompts " + in2.string()),
                        "lagkv");
}

TEST_F(Cli, BadFlagsAreRejected) {
  EXPECT_NE(run("generate --max-tokens -3").exit_code, 0);
  EXPECT_NE(run("generate --chat-template jinja").exit_code, 0);
  expect_one_error_line(run("generate --lagkv sink=4,lag=8,keep=9"), "keep");
  // Before the model loads: the path does not exist.
  expect_one_error_line(run("generate --device cpu --tensor-parallel-size 2 --model " + (dir_ / "missing.gguf").string()),
                        "tensor parallelism needs --device cuda");
  EXPECT_NE(run("generate --tensor-parallel-size 0").exit_code, 0);
  EXPECT_NE(run("frobnicate").exit_code, 0);
}

// `--version` names what `serve` has; a build without gRPC (-DLAGSERVE_GRPC=OFF)
// refuses a gRPC port with one error line, before it loads anything.
TEST_F(Cli, GrpcPortWithoutGrpcIsOneErrorLine) {
  const auto version = run("--version");
  ASSERT_EQ(version.exit_code, 0) << version.err;
  ASSERT_NE(version.out.find("features: http"), std::string::npos) << version.out;
  if (version.out.find("grpc") != std::string::npos) GTEST_SKIP() << "this build has gRPC";
  const std::string missing = (dir_ / "missing.gguf").string();
  expect_one_error_line(run("serve --port 0 --grpc-port 0 --model " + missing),
                        "built without gRPC");
}

// The default model's greedy answer equals transformers' (golden smollm2_chat,
// whose prompt is SmolLM2's chat template applied to this question).
TEST_F(Cli, DefaultModelChatGreedyMatchesTransformers) {
  if (!lagserve::model::resolve_model_path("default").ok()) GTEST_SKIP() << "no default model";
  std::ifstream jf(kSource / "tests/golden/logits/smollm2_chat.json");
  const auto golden = nlohmann::json::parse(jf);
  const std::string want = golden["greedy_text"].get<std::string>();
  const auto r = run("generate --chat --prompt 'What is the capital of France?' --max-tokens 32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want + "\n");
}

}  // namespace
