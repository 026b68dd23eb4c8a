// StreamDecoder: token ids -> text pieces that are always whole UTF-8
// characters. (The Tokenizer itself lives in bpe_tokenizer.cpp; its loaders in
// bpe_from_gguf.cpp and bpe_from_json.cpp.)
#include "engine/model/tokenizer.h"

#include "engine/model/unicode_bytes.h"

namespace lagserve::model {

std::string StreamDecoder::push(int32_t id) {
  if (!(skip_special_ && tokenizer_.is_special(id))) pending_ += tokenizer_.token_bytes(id);
  std::string tail;
  std::string out = utf8_repair(pending_, /*hold_incomplete_tail=*/true, &tail);
  pending_ = std::move(tail);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8_repair(pending_);
  pending_.clear();
  return out;
}

}  // namespace lagserve::model
