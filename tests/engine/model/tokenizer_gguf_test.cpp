// The tokenizer from GGUF metadata alone: a tiny GGUF v3 file written here
// loads and encodes, and each way its tokenizer metadata can be wrong is
// reported with what is wrong. (Ids against Hugging Face from the real
// model's GGUF: tokenizer_test.cpp.)
#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/model/gguf.h"
#include "engine/model/tokenizer.h"
#include "engine/model/unicode_bytes.h"
#include "tests/common/file_io.h"

namespace lagserve::model {
namespace {

using testing_util::write_temp;

// Writes a GGUF v3 file with metadata only (no tensors).
class GgufWriter {
 public:
  GgufWriter& string(const std::string& key, const std::string& value) {
    begin(key, 8);
    put_string(value);
    return *this;
  }
  GgufWriter& u32(const std::string& key, uint32_t value) {
    begin(key, 4);
    put(value);
    return *this;
  }
  GgufWriter& boolean(const std::string& key, bool value) {
    begin(key, 7);
    body_.push_back(value ? 1 : 0);
    return *this;
  }
  GgufWriter& strings(const std::string& key, const std::vector<std::string>& values) {
    begin(key, 9);
    put(uint32_t{8});
    put(uint64_t{values.size()});
    for (const auto& v : values) put_string(v);
    return *this;
  }
  GgufWriter& i32s(const std::string& key, const std::vector<int32_t>& values) {
    begin(key, 9);
    put(uint32_t{5});
    put(uint64_t{values.size()});
    for (int32_t v : values) put(v);
    return *this;
  }
  std::string bytes() const {
    std::string out = "GGUF";
    auto append = [&](auto v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
    append(uint32_t{3});
    append(uint64_t{0});
    append(n_kv_);
    out += body_;
    out.resize((out.size() + 31) / 32 * 32, '\0');
    return out;
  }

 private:
  template <typename T>
  void put(T v) {
    body_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void put_string(const std::string& s) {
    put(uint64_t{s.size()});
    body_ += s;
  }
  void begin(const std::string& key, uint32_t type) {
    put_string(key);
    put(type);
    ++n_kv_;
  }
  std::string body_;
  uint64_t n_kv_ = 0;
};

struct TinyGguf {
  std::string model = "gpt2", pre = "gpt2";
  std::vector<std::string> merges = {"a b"};
  std::vector<int32_t> types;
  bool with_tokens = true;
  uint32_t bos = 257;

  std::string bytes() const {
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; ++b) tokens.emplace_back(byte_to_mapped_utf8(b));
    tokens.insert(tokens.end(), {"ab", "<|end|>", "<u>"});
    std::vector<int32_t> token_types = types;
    if (token_types.empty()) {
      token_types.assign(tokens.size(), 1);
      token_types[257] = 3;  // control
      token_types[258] = 4;  // user-defined
    }
    GgufWriter w;
    w.string("general.architecture", "llama");
    if (!model.empty()) w.string("tokenizer.ggml.model", model);
    w.string("tokenizer.ggml.pre", pre);
    if (with_tokens) w.strings("tokenizer.ggml.tokens", tokens);
    w.i32s("tokenizer.ggml.token_type", token_types).strings("tokenizer.ggml.merges", merges);
    w.u32("tokenizer.ggml.bos_token_id", bos).u32("tokenizer.ggml.eos_token_id", 257);
    w.boolean("tokenizer.ggml.add_bos_token", true);
    return w.bytes();
  }
};

absl::StatusOr<std::unique_ptr<Tokenizer>> load_gguf(const TinyGguf& spec) {
  auto gguf = GgufFile::open(write_temp("tiny.gguf", spec.bytes()));
  if (!gguf.ok()) return gguf.status();
  return Tokenizer::from_gguf(**gguf);
}

void expect_gguf_error(const TinyGguf& spec, const std::string& fragment) {
  auto tok = load_gguf(spec);
  ASSERT_FALSE(tok.ok()) << "expected an error mentioning " << fragment;
  EXPECT_NE(std::string(tok.status().message()).find(fragment), std::string::npos)
      << tok.status();
}

TEST(TokenizerGguf, TinyFileWorks) {
  auto tok = load_gguf(TinyGguf{});
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_TRUE(t.add_bos_default());
  EXPECT_EQ(t.encode("ab<|end|>", true), (std::vector<int32_t>{257, 256, 257}));
  EXPECT_EQ(t.encode("<|end|>", false, false).size(), 7u);
  // User-defined tokens are matched whether or not special parsing is on.
  EXPECT_EQ(t.encode("a<u>", false, false), (std::vector<int32_t>{97, 258}));
  EXPECT_TRUE(t.is_special(257));
  EXPECT_FALSE(t.is_special(258));
  EXPECT_EQ(t.stop_ids(), std::vector<int32_t>{257});

  // Llama-3's rule keeps a word that is a token whole (ignore_merges).
  TinyGguf llama;
  llama.merges = {};
  EXPECT_EQ((*load_gguf(TinyGguf{}))->encode("x ab", false), (std::vector<int32_t>{120, 32, 256}));
  llama.pre = "llama-bpe";
  EXPECT_EQ((*load_gguf(llama))->encode("ab", false), (std::vector<int32_t>{256}));
  // Without that rule, a vocabulary with "ab" and no merges has lost them.
  llama.pre = "gpt2";
  auto no_merges = load_gguf(llama);
  ASSERT_FALSE(no_merges.ok());
  EXPECT_NE(no_merges.status().message().find("has no merges"), std::string::npos)
      << no_merges.status();
}

TEST(TokenizerGguf, ReportsWhatIsWrong) {
  TinyGguf spec;
  spec.model = "";
  expect_gguf_error(spec, "tokenizer.ggml.model");
  spec = {};
  spec.model = "llama";
  expect_gguf_error(spec, "'llama' is not supported");
  spec = {};
  spec.pre = "weird";
  expect_gguf_error(spec, "tokenizer.ggml.pre 'weird'");
  spec = {};
  spec.with_tokens = false;
  expect_gguf_error(spec, "tokenizer.ggml.tokens");
  spec = {};
  spec.merges = {"a b", "a zz"};
  expect_gguf_error(spec, "'zz' is not in the vocabulary");
  spec = {};
  spec.merges = {"ab"};
  expect_gguf_error(spec, "not of the form 'a b'");
  spec = {};
  spec.types = {1, 1, 1};
  expect_gguf_error(spec, "token_type has 3 entries");
  spec = {};
  spec.bos = 100000;
  expect_gguf_error(spec, "bos_token_id = 100000");
}

}  // namespace
}  // namespace lagserve::model
