// config.json and generation_config.json for export_hf: the model's
// hyper-parameters in Hugging Face form, RoPE scaling included when it can be
// expressed, and the LagKV policy under "lagkv".
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "trainer/export/safetensors_writer.h"

namespace lagserve::trainer {

// config.json text. `tied`: the export has no lm_head.weight. RoPE: the
// scaling of base.config.rope_inv_freq is found among none, the base HF
// folder's own rope_scaling / rope_parameters, linear, the Llama-3.1/3.2
// llama3 presets and a llama3 fit of the table, by re-reading each candidate
// with model::config_from_hf_json; none matching is Unimplemented naming
// base.source.
absl::StatusOr<std::string> hf_config_json(const model::Model& base, bool tied, SaveDtype dtype,
                                           const kv::LagPolicy& policy);

// generation_config.json text: the base folder's file when it has one, else
// bos_token_id and eos_token_id (every stop id of the tokenizer, EOS first).
absl::StatusOr<std::string> hf_generation_config_json(const model::Model& base);

// The double whose shortest decimal form is that of `value` (1e-05 rather
// than 9.999999747378752e-06), so that JSON readers that parse a double and
// narrow it get `value` back.
double float_for_json(float value);

}  // namespace lagserve::trainer
