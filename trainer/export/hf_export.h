// export_hf: writes trained weights as a Hugging Face model folder that
// model::load_model and transformers both load, carrying the LagKV policy.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "trainer/export/safetensors_writer.h"

namespace lagserve::trainer {

struct ExportOptions {
  SaveDtype dtype = SaveDtype::F32;
};

// Writes into `dir` (created if needed; files of the same names are replaced):
//   model.safetensors       HF tensor names (model.embed_tokens.weight,
//                           model.layers.N.self_attn.{q,k,v,o}_proj.weight,
//                           q/k/v biases for qwen2, mlp.{gate,up,down}_proj,
//                           the two norms, model.norm.weight, lm_head.weight
//                           unless the head is tied), unfused from `weights`
//   config.json             LlamaForCausalLM / Qwen2ForCausalLM hyper-parameters,
//                           RoPE scaling, bos/eos ids, torch_dtype and "lagkv"
//                           (lag_policy_to_config_json; false when disabled)
//   generation_config.json  the base folder's, else bos/eos ids
//   tokenizer.json, tokenizer_config.json (chat_template = base.chat_template,
//   bos/eos tokens, add_bos_token), special_tokens_map.json
// `base` gives the config, the chat template and the tokenizer's source:
// base.source is a HF folder (its tokenizer files are copied) or a .gguf
// file (a byte-level BPE tokenizer.json is synthesized from its metadata).
// `weights` must have base.config's shapes; an empty `output` means tied.
// Errors: InvalidArgument (weights of the wrong shape, a policy out of range
// or naming a layer the model lacks), Unimplemented (RoPE scaling or a
// tokenizer that the HF format cannot express), I/O errors naming the file.
absl::Status export_hf(const std::string& dir, const model::Model& base,
                       const model::ModelWeights& weights, const kv::LagPolicy& policy,
                       const ExportOptions& options = {});

}  // namespace lagserve::trainer
