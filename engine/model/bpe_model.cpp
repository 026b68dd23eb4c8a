// Byte-level BPE merging (see bpe_model.h). The merge loop follows the
// Hugging Face `tokenizers` rule exactly: repeatedly apply the applicable
// merge of lowest rank, the leftmost one among equals.
#include "engine/model/bpe_model.h"

#include <algorithm>
#include <array>
#include <mutex>
#include <span>

#include <fmt/format.h>

#include "engine/common/check.h"
#include "engine/model/unicode_bytes.h"

namespace lagserve::model {

// Open-addressing hash table (pair of ids) -> (rank, merged id). Lookups are
// the inner loop of BPE, so this avoids std::unordered_map's node chasing.
struct BpeModel::MergeTable {
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    int32_t merged = -1;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  std::vector<Slot> slots;
  uint64_t mask = 0;

  explicit MergeTable(size_t n_entries) {
    size_t capacity = 16;
    while (capacity < 2 * n_entries) capacity *= 2;
    slots.resize(capacity);
    mask = capacity - 1;
  }
  static uint64_t key_of(int32_t left, int32_t right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }
  size_t home(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
  }
  // Keeps the first (lowest-rank) entry for a pair, as llama.cpp does.
  void insert(int32_t left, int32_t right, uint32_t rank, int32_t merged) {
    const uint64_t key = key_of(left, right);
    for (size_t i = home(key);; i = (i + 1) & mask) {
      if (slots[i].key == key) return;
      if (slots[i].key == kEmpty) {
        slots[i] = {key, rank, merged};
        return;
      }
    }
  }
  const Slot* find(int32_t left, int32_t right) const {
    const uint64_t key = key_of(left, right);
    for (size_t i = home(key);; i = (i + 1) & mask) {
      if (slots[i].key == key) return &slots[i];
      if (slots[i].key == kEmpty) return nullptr;
    }
  }
};

// Raw word bytes -> ids. Sharded by hash so that concurrent encoders rarely
// wait on each other; a shard that grows past its share is simply cleared.
class BpeModel::WordCache {
 public:
  static constexpr size_t kShards = 16;
  static constexpr size_t kMaxEntriesPerShard = 8192;
  static constexpr size_t kMaxWordBytes = 128;

  bool lookup(std::string_view word, std::vector<int32_t>& out) {
    Shard& shard = shard_of(word);
    std::lock_guard lock(shard.mutex);
    auto it = shard.map.find(word);
    if (it == shard.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void store(std::string_view word, std::span<const int32_t> ids) {
    Shard& shard = shard_of(word);
    std::lock_guard lock(shard.mutex);
    if (shard.map.size() >= kMaxEntriesPerShard) shard.map.clear();
    shard.map.emplace(std::string(word), std::vector<int32_t>(ids.begin(), ids.end()));
  }

 private:
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringViewHash, std::equal_to<>> map;
  };
  Shard& shard_of(std::string_view word) {
    return shards_[StringViewHash{}(word) % kShards];
  }
  std::array<Shard, kShards> shards_;
};

BpeModel::BpeModel() = default;
BpeModel::~BpeModel() = default;

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::create(
    const std::vector<std::string>& tokens, const std::vector<bool>& bpe_may_produce,
    const std::vector<std::pair<std::string, std::string>>& merges, Options options) {
  LAGSERVE_CHECK(tokens.size() == bpe_may_produce.size(), "{} tokens but {} flags",
                 tokens.size(), bpe_may_produce.size());
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  model->options_ = options;
  model->bpe_may_produce_ = bpe_may_produce;
  model->index_.reserve(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) {
    // An empty text marks a hole in the id range; duplicates keep the first id.
    if (!tokens[id].empty()) model->index_.emplace(tokens[id], static_cast<int32_t>(id));
  }
  auto producible = [&](std::string_view text) -> std::optional<int32_t> {
    auto it = model->index_.find(text);
    if (it == model->index_.end() || !bpe_may_produce[it->second]) return std::nullopt;
    return it->second;
  };
  for (int b = 0; b < 256; ++b) {
    model->byte_ids_[b] = producible(byte_to_mapped_utf8(static_cast<uint8_t>(b))).value_or(-1);
  }

  // Without merges BPE can only output single characters: a vocabulary with
  // longer tokens has lost its merges (unless whole words are looked up).
  if (merges.empty() && !options.ignore_merges) {
    for (size_t id = 0; id < tokens.size(); ++id) {
      if (bpe_may_produce[id] && !tokens[id].empty() && utf8_step(tokens[id]).n_bytes < tokens[id].size()) {
        return absl::InvalidArgumentError(fmt::format(
            "BPE tokenizer has no merges but its vocabulary has multi-character tokens "
            "(first: id {}, '{}'): the merges are missing",
            id, tokens[id]));
      }
    }
  }
  model->merges_ = std::make_unique<MergeTable>(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto left_it = model->index_.find(left);
    const auto right_it = model->index_.find(right);
    const std::string merged = left + right;
    const auto merged_it = model->index_.find(merged);
    const char* missing = left_it == model->index_.end()     ? "left token"
                          : right_it == model->index_.end()  ? "right token"
                          : merged_it == model->index_.end() ? "merged token"
                                                             : nullptr;
    if (missing != nullptr) {
      return absl::InvalidArgumentError(fmt::format(
          "BPE merge {} ('{} {}'): the {} '{}' is not in the vocabulary", rank, left, right,
          missing, missing[0] == 'l' ? left : missing[0] == 'r' ? right : merged));
    }
    // NOTE: merges that would produce an added/special token are dropped, so
    // plain text can never turn into a control token.
    if (!bpe_may_produce[merged_it->second]) continue;
    model->merges_->insert(left_it->second, right_it->second, static_cast<uint32_t>(rank),
                           merged_it->second);
  }
  model->n_merges_ = merges.size();
  model->cache_ = std::make_unique<WordCache>();
  return model;
}

std::optional<int32_t> BpeModel::find(std::string_view text) const {
  auto it = index_.find(text);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::encode_piece(std::string_view raw, std::vector<int32_t>& out) const {
  if (raw.empty()) return;
  if (raw.size() == 1) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(raw[0])];
    if (id >= 0) {
      out.push_back(id);
    } else if (options_.unk_id) {
      out.push_back(*options_.unk_id);
    }
    return;
  }
  const bool cacheable = raw.size() <= WordCache::kMaxWordBytes;
  if (cacheable && cache_->lookup(raw, out)) return;
  const size_t first = out.size();
  if (options_.ignore_merges) {
    auto it = index_.find(bytes_to_mapped(raw));
    if (it != index_.end() && bpe_may_produce_[it->second]) {
      out.push_back(it->second);
    } else {
      merge_word(raw, out);
    }
  } else {
    merge_word(raw, out);
  }
  if (cacheable) cache_->store(raw, std::span<const int32_t>(out).subspan(first));
}

void BpeModel::merge_word(std::string_view raw, std::vector<int32_t>& out) const {
  // Symbols form a doubly linked list over the word's bytes; a merged-away
  // symbol has id -1.
  struct Symbol {
    int32_t id, prev, next;
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;     // left symbol
    int32_t merged;  // id the merge creates (to detect stale candidates)
  };
  // Min-heap on (rank, pos): std heap functions build a max-heap, so invert.
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };

  std::vector<Symbol> symbols;
  symbols.reserve(raw.size());
  for (unsigned char byte : raw) {
    int32_t id = byte_ids_[byte];
    if (id < 0) {
      if (!options_.unk_id) continue;
      id = *options_.unk_id;
    }
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  const auto n_symbols = static_cast<int32_t>(symbols.size());

  std::vector<Candidate> heap;
  heap.reserve(raw.size());
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    if (const auto* slot = merges_->find(symbols[left].id, symbols[right].id)) {
      heap.push_back({slot->rank, left, slot->merged});
      std::push_heap(heap.begin(), heap.end(), later);
    }
  };
  for (int32_t i = 0; i + 1 < n_symbols; ++i) consider(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const auto* slot = merges_->find(left.id, right.id);
    if (slot == nullptr || slot->merged != top.merged) continue;  // stale
    left.id = top.merged;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace lagserve::model
