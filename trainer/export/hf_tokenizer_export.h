// Tokenizer files for export_hf: copied from a Hugging Face base folder, or
// synthesized from a GGUF file's tokenizer.ggml.* metadata.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace lagserve::trainer {

struct HfTokenizerFiles {
  std::string tokenizer_json;
  std::string tokenizer_config_json;
  std::string special_tokens_map_json;
};

// From a folder: tokenizer.json as it is, tokenizer_config.json with
// chat_template set to base.chat_template (and bos_token, eos_token,
// add_bos_token added when it lacks them), special_tokens_map.json as it is
// or made from the tokenizer's BOS/EOS. From a GGUF file: a byte-level BPE
// tokenizer.json (vocab, merges, the pre-tokenizer of tokenizer.ggml.pre as
// HF Digits/Split/ByteLevel, control and user-defined tokens as added_tokens,
// a BOS post-processor when BOS is added) that encodes exactly as the GGUF
// tokenizer does. Unimplemented for what tokenizer.json cannot hold (an
// unknown pre-tokenizer, empty or duplicate tokens).
absl::StatusOr<HfTokenizerFiles> hf_tokenizer_files(const model::Model& base);

}  // namespace lagserve::trainer
