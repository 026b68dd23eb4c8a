// Byte-level BPE Tokenizer: added tokens, then pre-tokenizer regexes, then
// BPE per piece; decoding undoes the GPT-2 byte map.
#include "engine/model/bpe_tokenizer.h"

#include <algorithm>

#include <fmt/format.h>

#include "engine/common/check.h"
#include "engine/model/bpe_model.h"
#include "engine/model/pretokenizer.h"
#include "engine/model/unicode_bytes.h"

namespace lagserve::model {
namespace {

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(BpeTokenizerSpec spec, std::unique_ptr<BpeModel> bpe, PreTokenizer pre)
      : tokens_(std::move(spec.tokens)),
        bpe_(std::move(bpe)),
        pre_(std::move(pre)),
        bos_id_(spec.bos_id),
        eos_id_(spec.eos_id),
        add_bos_(spec.add_bos) {
    const size_t n = tokens_.size();
    special_.assign(n, false);
    token_bytes_.resize(n);
    std::vector<bool> added(n, false);
    for (const AddedToken& token : spec.added) {
      added[token.id] = true;
      special_[token.id] = token.special;
    }
    for (size_t id = 0; id < n; ++id) {
      // Added tokens are their own text. A vocabulary entry outside the byte
      // map is kept verbatim too (what Hugging Face's ByteLevel decoder does).
      std::optional<std::string> raw;
      if (!added[id]) raw = mapped_to_bytes(tokens_[id]);
      token_bytes_[id] = raw ? std::move(*raw) : tokens_[id];
    }
    matcher_ = AddedTokenMatcher(std::move(spec.added));

    if (eos_id_) stop_ids_.push_back(*eos_id_);
    for (std::string_view name : {"<|im_end|>", "<|eot_id|>", "<|endoftext|>",
                                  "<|end_of_text|>"}) {
      if (auto id = find_token(name)) stop_ids_.push_back(*id);
    }
    stop_ids_.insert(stop_ids_.end(), spec.extra_stop_ids.begin(), spec.extra_stop_ids.end());
    std::sort(stop_ids_.begin(), stop_ids_.end());
    stop_ids_.erase(std::unique(stop_ids_.begin(), stop_ids_.end()), stop_ids_.end());
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos,
                              bool parse_special) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 2);
    if (add_bos && bos_id_) ids.push_back(*bos_id_);
    std::vector<AddedTokenMatcher::Segment> segments;
    matcher_.split(text, parse_special, segments);
    std::vector<std::string_view> pieces;
    for (const auto& segment : segments) {
      if (segment.id >= 0) {
        ids.push_back(segment.id);
        continue;
      }
      pieces.clear();
      pre_.split(segment.text, pieces);
      for (std::string_view piece : pieces) bpe_->encode_piece(piece, ids);
    }
    return ids;
  }

  std::string decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::string out;
    for (int32_t id : ids) {
      if (!valid_id(id) || (skip_special && special_[id])) continue;
      out += token_bytes_[id];
    }
    return out;
  }

  std::string token_bytes(int32_t id) const override {
    return valid_id(id) ? token_bytes_[id] : std::string();
  }

  const std::string& token_text(int32_t id) const override {
    LAGSERVE_CHECK(valid_id(id), "token id {} outside the vocabulary [0, {})", id,
                   tokens_.size());
    return tokens_[id];
  }

  std::optional<int32_t> find_token(std::string_view text) const override {
    return bpe_->find(text);
  }
  bool is_special(int32_t id) const override { return valid_id(id) && special_[id]; }
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }
  bool add_bos_default() const override { return add_bos_; }
  std::vector<int32_t> stop_ids() const override { return stop_ids_; }

 private:
  bool valid_id(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < tokens_.size();
  }

  std::vector<std::string> tokens_;       // [vocab] mapped text
  std::vector<std::string> token_bytes_;  // [vocab] raw bytes
  std::vector<bool> special_;             // [vocab]
  std::unique_ptr<BpeModel> bpe_;
  PreTokenizer pre_;
  AddedTokenMatcher matcher_;
  std::optional<int32_t> bos_id_, eos_id_;
  bool add_bos_ = false;
  std::vector<int32_t> stop_ids_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> make_bpe_tokenizer(BpeTokenizerSpec spec,
                                                             std::string_view source) {
  auto error = [&](std::string_view message) {
    return absl::InvalidArgumentError(fmt::format("{}: tokenizer: {}", source, message));
  };
  const auto n = static_cast<int64_t>(spec.tokens.size());
  if (n == 0) return error("the vocabulary is empty");
  auto in_range = [&](std::optional<int32_t> id) { return !id || (*id >= 0 && *id < n); };
  for (const auto& [name, id] : {std::pair{"BOS", spec.bos_id}, std::pair{"EOS", spec.eos_id},
                                 std::pair{"UNK", spec.unk_id}}) {
    if (!in_range(id)) {
      return error(fmt::format("{} token id {} is outside the vocabulary [0, {})", name, *id, n));
    }
  }
  for (int32_t id : spec.extra_stop_ids) {
    if (!in_range(id)) return error(fmt::format("stop token id {} is outside the vocabulary", id));
  }
  std::vector<bool> bpe_may_produce(n, true);
  for (const AddedToken& token : spec.added) {
    if (!in_range(token.id)) {
      return error(fmt::format("added token '{}' has id {} outside the vocabulary [0, {})",
                               token.text, token.id, n));
    }
    if (token.text.empty()) return error(fmt::format("added token {} has empty text", token.id));
    if (!utf8_is_valid(token.text)) {
      return error(fmt::format("added token {} is not valid UTF-8", token.id));
    }
    bpe_may_produce[token.id] = false;
  }
  for (int64_t id = 0; id < n; ++id) {
    if (spec.tokens[id].empty()) bpe_may_produce[id] = false;
  }

  BpeModel::Options options;
  options.ignore_merges = spec.ignore_merges;
  options.unk_id = spec.unk_id;
  auto bpe = BpeModel::create(spec.tokens, bpe_may_produce, spec.merges, options);
  if (!bpe.ok()) return error(std::string(bpe.status().message()));
  // NOTE: a byte-level vocabulary may lack a few byte tokens (SmolLM2 has no
  // token for 0x04 or 0xFF); such bytes are dropped, or become UNK, exactly as
  // Hugging Face does. A vocabulary without printable ASCII is not byte-level.
  for (int b = 33; b < 127; ++b) {
    if (!(*bpe)->find(byte_to_mapped_utf8(static_cast<uint8_t>(b)))) {
      return error(fmt::format(
          "the vocabulary has no token for byte 0x{:02x} ('{}'); it is not a byte-level BPE "
          "vocabulary",
          b, byte_to_mapped_utf8(static_cast<uint8_t>(b))));
    }
  }
  auto pre = PreTokenizer::create(spec.pre_patterns);
  if (!pre.ok()) return error(std::string(pre.status().message()));
  spec.merges.clear();
  spec.merges.shrink_to_fit();
  return std::unique_ptr<Tokenizer>(
      new BpeTokenizer(std::move(spec), std::move(*bpe), std::move(*pre)));
}

}  // namespace lagserve::model
