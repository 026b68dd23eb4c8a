// Corrupt model files, made here from the committed tiny models
// (tests/golden/models): each kind must be refused by load_model with one
// message that names the problem; never a crash, never a huge allocation.
// The kinds and their messages are listed in docs/reliability.md.
#include "engine/model/model.h"
#include "engine/model/model_config.h"
#include "tests/common/file_io.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace lagserve::model {
namespace {

using testing_util::read_file;
using testing_util::write_file;

namespace fs = std::filesystem;
using nlohmann::json;
const fs::path kModels = fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models";

template <typename T>
T get(const std::string& b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof(T));
  return v;
}

template <typename T>
void put(std::string& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
}

// Where things are in a GGUF file: section boundaries, where each metadata
// value and each tensor-directory field lies. Walks the format as
// engine/model/gguf.cpp documents it (the file is trusted: it is ours).
struct GgufLayout {
  size_t metadata_begin = 24;  // after magic, version, tensor count, metadata count
  size_t directory_begin = 0;  // after the metadata
  size_t directory_end = 0;    // after the tensor directory
  size_t data_begin = 0;       // directory_end rounded up to the alignment (32)
  std::map<std::string, size_t> value_at;  // key -> offset of its value (after the type tag)
  struct Entry {
    size_t dims_at = 0, type_at = 0, offset_at = 0;  // offsets of the fields
    uint64_t data_offset = 0;                         // from data_begin
  };
  std::map<std::string, Entry> tensors;

  explicit GgufLayout(const std::string& b) {
    size_t pos = metadata_begin;
    const uint64_t n_tensors = get<uint64_t>(b, 8), n_kv = get<uint64_t>(b, 16);
    auto str = [&] {
      const uint64_t n = get<uint64_t>(b, pos);
      std::string s = b.substr(pos + 8, n);
      pos += 8 + n;
      return s;
    };
    for (uint64_t i = 0; i < n_kv; ++i) {
      const std::string key = str();
      const uint32_t type = get<uint32_t>(b, pos);
      pos += 4;
      value_at[key] = pos;
      skip_value(b, type, pos);
    }
    directory_begin = pos;
    for (uint64_t i = 0; i < n_tensors; ++i) {
      const std::string name = str();
      Entry e;
      const uint32_t n_dims = get<uint32_t>(b, pos);
      e.dims_at = pos + 4;
      e.type_at = e.dims_at + 8 * n_dims;
      e.offset_at = e.type_at + 4;
      e.data_offset = get<uint64_t>(b, e.offset_at);
      pos = e.offset_at + 8;
      tensors[name] = e;
    }
    directory_end = pos;
    data_begin = (pos + 31) / 32 * 32;
  }

  static void skip_value(const std::string& b, uint32_t type, size_t& pos) {
    static const size_t kFixed[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == 8) {
      pos += 8 + get<uint64_t>(b, pos);
    } else if (type == 9) {
      const uint32_t element = get<uint32_t>(b, pos);
      const uint64_t n = get<uint64_t>(b, pos + 4);
      pos += 12;
      for (uint64_t i = 0; i < n; ++i) skip_value(b, element, pos);
    } else {
      pos += kFixed[type];
    }
  }
};

class CorruptModel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("lagserve_corrupt_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    gguf_ = read_file(kModels / "tiny-llama.gguf");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // load_model's error for these bytes as a GGUF file; fails the test if it loads.
  std::string gguf_error(const std::string& bytes) {
    const fs::path p = dir_ / "model.gguf";
    write_file(p, bytes);
    return error_of(p);
  }
  static std::string error_of(const fs::path& p) {
    auto m = load_model(p.string());
    EXPECT_FALSE(m.ok()) << p;
    return m.ok() ? "" : std::string(m.status().message());
  }

  // A copy of a tiny Hugging Face folder.
  fs::path hf_copy(const char* name) {
    const fs::path d = dir_ / name;
    fs::copy(kModels / name, d);
    return d;
  }
  // Rewrites a .safetensors file's header through `edit` (data unchanged
  // unless `edit_data` changes it).
  static void edit_safetensors(const fs::path& p, const std::function<void(json&)>& edit,
                               const std::function<void(std::string&, const json&)>& edit_data = {}) {
    const std::string b = read_file(p);
    const uint64_t n = get<uint64_t>(b, 0);
    json header = json::parse(b.substr(8, n));
    std::string data = b.substr(8 + n);
    edit(header);
    if (edit_data) edit_data(data, header);
    const std::string text = header.dump();
    std::string out(8, '\0');
    put<uint64_t>(out, 0, text.size());
    write_file(p, out + text + data);
  }

  std::string gguf_;  // tiny-llama.gguf
  fs::path dir_;
};

#define EXPECT_HAS(message, words) \
  EXPECT_NE((message).find(words), std::string::npos) << (message)

// --- Empty and truncated files ----------------------------------------------

TEST_F(CorruptModel, EmptyFile) {
  EXPECT_HAS(gguf_error(""), "empty file");
  const fs::path hf = hf_copy("tiny-llama");
  write_file(hf / "model.safetensors", "");
  EXPECT_HAS(error_of(hf), "truncated: 0 bytes");
  write_file(hf / "config.json", "");
  EXPECT_HAS(error_of(hf), "config.json: not a JSON object");
}

TEST_F(CorruptModel, GgufTruncatedAtEverySectionBoundary) {
  const GgufLayout l(gguf_);
  const auto& last = l.tensors.at("blk.1.ffn_down.weight");
  const std::vector<std::pair<size_t, std::string>> cuts = {
      {4, "truncated: header version needs 4 bytes at byte 4"},
      {12, "truncated: header tensor count"},
      {l.metadata_begin, "header claims 18 metadata entries but only 0 bytes follow"},
      {l.metadata_begin + 100, "header claims 18 metadata entries but only 100 bytes follow"},
      {l.metadata_begin + 1000, "truncated: metadata entry 13 ('tokenizer.ggml.tokens')"},
      {l.directory_begin - 1, "truncated: metadata entry 17 ('tokenizer.ggml.add_bos_token')"},
      {l.directory_begin, "header claims 22 tensors but only 0 bytes follow the metadata"},
      {l.directory_begin + 30, "header claims 22 tensors but only 30 bytes follow the metadata"},
      {l.directory_begin + 600, "truncated: tensor directory entry"},
      {l.directory_end - 4, "truncated: tensor directory entry 21 ('blk.1.ffn_down.weight')"},
      {l.directory_end, "truncated: tensor 'rope_freqs.weight' data"},
      {l.data_begin, "truncated: tensor 'rope_freqs.weight' data"},
      {l.data_begin + 100, "truncated: tensor 'token_embd.weight' data"},
      {l.data_begin + last.data_offset, "truncated: tensor 'blk.1.ffn_down.weight' data"},
      {gguf_.size() - 1, "truncated: tensor 'blk.1.ffn_down.weight' data"},
  };
  for (const auto& [cut, words] : cuts) {
    SCOPED_TRACE(cut);
    EXPECT_HAS(gguf_error(gguf_.substr(0, cut)), words);
  }
}

TEST_F(CorruptModel, SafetensorsTruncated) {
  const fs::path hf = hf_copy("tiny-llama");
  const std::string b = read_file(hf / "model.safetensors");
  write_file(hf / "model.safetensors", b.substr(0, 5));
  EXPECT_HAS(error_of(hf), "truncated: 5 bytes, less than the 8-byte header length");
  write_file(hf / "model.safetensors", b.substr(0, 8 + get<uint64_t>(b, 0) / 2));
  EXPECT_HAS(error_of(hf), "runs past the end of the file");
  write_file(hf / "model.safetensors", b.substr(0, b.size() - 100));
  EXPECT_HAS(error_of(hf), "run past the data section");
}

// --- Absurd counts, dimensions and offsets: refused before any allocation ----

TEST_F(CorruptModel, AbsurdTensorAndMetadataCounts) {
  std::string b = gguf_;
  put<uint64_t>(b, 8, uint64_t{1} << 60);
  EXPECT_HAS(gguf_error(b), "header claims 1152921504606846976 tensors");
  b = gguf_;
  put<uint64_t>(b, 16, uint64_t{1} << 60);
  EXPECT_HAS(gguf_error(b), "header claims 1152921504606846976 metadata entries");
  // An array count of 2^60 (the token list).
  b = gguf_;
  put<uint64_t>(b, GgufLayout(gguf_).value_at.at("tokenizer.ggml.tokens") + 4, uint64_t{1} << 60);
  EXPECT_HAS(gguf_error(b), "array of 1152921504606846976 string values");
}

TEST_F(CorruptModel, AbsurdDimensions) {
  const GgufLayout l(gguf_);
  const auto& embd = l.tensors.at("token_embd.weight");
  std::string b = gguf_;
  put<uint64_t>(b, embd.dims_at + 8, uint64_t{1} << 40);  // 2^40 rows
  EXPECT_HAS(gguf_error(b), "tensor 'token_embd.weight' data");
  put<uint64_t>(b, embd.dims_at, uint64_t{1} << 40);  // 2^80 elements
  EXPECT_HAS(gguf_error(b), "tensor 'token_embd.weight': element count overflows 64 bits");
  b = gguf_;
  put<uint64_t>(b, embd.dims_at, 0);
  EXPECT_HAS(gguf_error(b), "tensor 'token_embd.weight' has invalid dimension 0 = 0");
}

TEST_F(CorruptModel, AbsurdModelSizes) {
  const GgufLayout l(gguf_);
  std::string b = gguf_;
  // 2^31 - 1 layers: the first missing layer is the error, not 2^31 allocations.
  put<uint32_t>(b, l.value_at.at("llama.block_count"), 0x7fffffff);
  EXPECT_HAS(gguf_error(b), "missing tensor 'blk.2.attn_norm.weight'");
  put<uint32_t>(b, l.value_at.at("llama.block_count"), 0xffffffff);
  EXPECT_HAS(gguf_error(b), "llama.block_count = 4294967295 is out of range");
  b = gguf_;
  put<uint32_t>(b, l.value_at.at("llama.embedding_length"), 0x40000000);
  EXPECT_HAS(gguf_error(b), "partial RoPE");  // head_dim 2^28 != 16
  // HF: heads x head_dim past int32.
  const fs::path hf = hf_copy("tiny-llama");
  json cfg = json::parse(read_file(hf / "config.json"));
  cfg["head_dim"] = 1 << 30;
  write_file(hf / "config.json", cfg.dump());
  EXPECT_HAS(error_of(hf), "4 heads x head_dim 1073741824 is too large");
  cfg["head_dim"] = 8192;
  write_file(hf / "config.json", cfg.dump());
  EXPECT_HAS(error_of(hf), "head_dim 8192 is larger than 4096");
}

TEST_F(CorruptModel, OffsetPastTheEnd) {
  std::string b = gguf_;
  put<uint64_t>(b, GgufLayout(gguf_).tensors.at("blk.1.ffn_down.weight").offset_at,
                uint64_t{1} << 40);
  EXPECT_HAS(gguf_error(b), "tensor 'blk.1.ffn_down.weight' data (offset 1099511627776");
  EXPECT_HAS(gguf_error(b), "runs past the end of the file");
  const fs::path hf = hf_copy("tiny-llama");
  edit_safetensors(hf / "model.safetensors", [](json& h) {
    h["model.norm.weight"]["data_offsets"] = {uint64_t{1} << 40, (uint64_t{1} << 40) + 256};
  });
  EXPECT_HAS(error_of(hf), "tensor 'model.norm.weight': data_offsets [1099511627776, "
                           "1099511628032] run past the data section");
}

TEST_F(CorruptModel, OverlappingTensors) {
  const GgufLayout l(gguf_);
  std::string b = gguf_;
  put<uint64_t>(b, l.tensors.at("output_norm.weight").offset_at,
                l.tensors.at("token_embd.weight").data_offset);
  EXPECT_HAS(gguf_error(b), "overlaps tensor");
  const fs::path hf = hf_copy("tiny-llama");
  edit_safetensors(hf / "model.safetensors", [](json& h) {
    h["model.norm.weight"]["data_offsets"] = h["model.layers.0.input_layernorm.weight"]["data_offsets"];
  });
  EXPECT_HAS(error_of(hf), "overlap the previous tensor");
}

// --- Wrong types ---------------------------------------------------------------

TEST_F(CorruptModel, WrongDtypes) {
  const GgufLayout l(gguf_);
  std::string b = gguf_;
  put<uint32_t>(b, l.tensors.at("token_embd.weight").type_at, 99);
  EXPECT_HAS(gguf_error(b), "tensor 'token_embd.weight' has type unknown(99), which is not supported");
  // F16 read as F32: twice the bytes, so it runs into the next tensor.
  b = gguf_;
  put<uint32_t>(b, l.tensors.at("token_embd.weight").type_at, 0);
  EXPECT_HAS(gguf_error(b), "overlaps tensor 'token_embd.weight'");
  // A metadata value of the wrong type.
  b = gguf_;
  put<uint32_t>(b, l.value_at.at("llama.block_count") - 4, 6);  // uint32 -> float32 tag
  EXPECT_HAS(gguf_error(b), "metadata key 'llama.block_count' is a float32, expected an integer");
  const fs::path hf = hf_copy("tiny-llama");
  edit_safetensors(hf / "model.safetensors",
                   [](json& h) { h["model.norm.weight"]["dtype"] = "I32"; });
  EXPECT_HAS(error_of(hf), "tensor 'model.norm.weight': dtype I32 is not supported");
}

// --- NaN and infinite weights ------------------------------------------------

TEST_F(CorruptModel, NanAndInfiniteWeights) {
  const GgufLayout l(gguf_);
  std::string b = gguf_;
  // blk.0.attn_norm.weight is F32, blk.0.attn_q.weight F16.
  put<float>(b, l.data_begin + l.tensors.at("blk.0.attn_norm.weight").data_offset + 4 * 5, NAN);
  EXPECT_HAS(gguf_error(b), "tensor 'blk.0.attn_norm.weight' has a NaN at element 5");
  b = gguf_;
  put<uint16_t>(b, l.data_begin + l.tensors.at("blk.0.attn_q.weight").data_offset + 2 * 7,
                0x7c00);  // fp16 +inf
  EXPECT_HAS(gguf_error(b), "tensor 'blk.0.attn_q.weight' has an infinity at element 7");
  // A RoPE factor of 0 (rope_freqs.weight is F32): finite, but it divides.
  b = gguf_;
  put<float>(b, l.data_begin + l.tensors.at("rope_freqs.weight").data_offset + 4 * 2, 0.f);
  EXPECT_HAS(gguf_error(b), "RoPE frequency inf is not a finite positive number");
  const fs::path hf = hf_copy("tiny-llama");
  edit_safetensors(
      hf / "model.safetensors", [](json&) {},
      [](std::string& data, const json& h) {
        const uint64_t at = h["model.norm.weight"]["data_offsets"][0].get<uint64_t>();
        put<float>(data, at + 4 * 63, -NAN);
      });
  EXPECT_HAS(error_of(hf), "tensor 'model.norm.weight' has a NaN at element 63");
}

// --- Tokenizer, architecture, vocabulary --------------------------------------

TEST_F(CorruptModel, TokenizerWithoutMerges) {
  std::string b = gguf_;
  const size_t at = b.find("tokenizer.ggml.merges");
  ASSERT_NE(at, std::string::npos);
  b[at + 20] = 'z';  // the key becomes tokenizer.ggml.mergez
  EXPECT_HAS(gguf_error(b), "metadata key 'tokenizer.ggml.merges' not found");
  const fs::path hf = hf_copy("tiny-llama");
  json tok = json::parse(read_file(hf / "tokenizer.json"));
  tok["model"]["merges"] = json::array();
  write_file(hf / "tokenizer.json", tok.dump());
  EXPECT_HAS(error_of(hf), "has no merges");
  tok["model"].erase("merges");
  write_file(hf / "tokenizer.json", tok.dump());
  EXPECT_HAS(error_of(hf), "model.merges is missing or not an array");
}

TEST_F(CorruptModel, UnknownArchitecture) {
  const std::string head = "general.architecture" + std::string("\x08\0\0\0\x05\0\0\0\0\0\0\0", 12);
  std::string b = gguf_;
  b.replace(b.find(head + "llama"), head.size() + 5, head + "gpt2x");
  EXPECT_HAS(gguf_error(b), "unknown architecture 'gpt2x'");
  const fs::path hf = hf_copy("tiny-qwen2");
  json cfg = json::parse(read_file(hf / "config.json"));
  cfg["model_type"] = "mamba";
  write_file(hf / "config.json", cfg.dump());
  EXPECT_HAS(error_of(hf), "unknown architecture 'mamba'");
}

TEST_F(CorruptModel, VocabularyMismatch) {
  std::string b = gguf_;
  put<uint32_t>(b, GgufLayout(gguf_).value_at.at("llama.vocab_size"), 321);
  EXPECT_HAS(gguf_error(b), "tokenizer has 320 tokens but the model's vocabulary is 321");
  const fs::path hf = hf_copy("tiny-qwen2");
  json cfg = json::parse(read_file(hf / "config.json"));
  cfg["vocab_size"] = 200;  // fewer than the tokenizer's 300 tokens
  write_file(hf / "config.json", cfg.dump());
  EXPECT_HAS(error_of(hf), "tokenizer has 300 tokens but the model's vocabulary is 200");
  cfg["vocab_size"] = 400;  // more than the embedding's rows
  write_file(hf / "config.json", cfg.dump());
  EXPECT_HAS(error_of(hf), "tensor 'model.embed_tokens.weight' has shape [320, 64], expected [400, 64]");
}

// config.json values that used to escape as exceptions (a non-string RoPE
// type; a negative head_dim beside rope_parameters) or be taken silently
// (a layer count that wrapped through int32; an epsilon past float's range).
TEST_F(CorruptModel, ConfigJsonOutOfRange) {
  const std::string base =
      R"({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, )"
      R"("intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2, )"
      R"("vocab_size": 320, )";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("rope_scaling": {"rope_type": 5}})", "RoPE scaling '5' is not supported"},
      {R"("head_dim": -2, "rope_parameters": {"rope_theta": 10000}})", "non-positive size"},
      {R"("num_hidden_layers": 4294967298})", "num_hidden_layers = 4294967298 is out of range"},
      {R"("rms_norm_eps": 1e300})", "rms_eps (nan) and rope_theta (10000) must be finite and > 0"},
      {R"("rope_scaling": {"type": "linear", "factor": 1e-300}})",
       "RoPE frequency nan is not a finite positive number"},
  };
  for (const auto& [tail, words] : cases) {
    auto c = config_from_hf_json(base + tail, "config.json");
    ASSERT_FALSE(c.ok()) << tail;
    EXPECT_HAS(std::string(c.status().message()), words);
  }
}

TEST_F(CorruptModel, ShardListedButMissing) {
  const fs::path hf = hf_copy("tiny-qwen2");
  fs::remove(hf / "model-00002-of-00002.safetensors");
  EXPECT_HAS(error_of(hf), "shard 'model-00002-of-00002.safetensors' listed in weight_map");
}

}  // namespace
}  // namespace lagserve::model
