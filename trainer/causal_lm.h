// The llama/qwen2 decoder as LibTorch modules, built from the engine's loaded
// weights (engine/model): fp32 master weights, matmuls in the compute dtype
// (fp32 on the CPU, bf16 on CUDA), attention LRSA or full.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "trainer/lrsa_attention.h"

namespace lagserve::trainer {

enum class AttentionMode { Lrsa, Full };

struct CausalLmOptions {
  AttentionMode attention = AttentionMode::Lrsa;
  kv::LagPolicy policy;  // used in Lrsa mode (a disabled policy means full attention)
  bool checkpoint_activations = false;  // recompute each layer in the backward pass
  // Matmul dtype: kFloat, kBFloat16 (CUDA), or kDouble (gradient checks; call
  // .to(torch::kDouble) on the module too).
  torch::Dtype compute_dtype = torch::kFloat;
};

class CausalLm : public torch::nn::Module {
 public:
  // Copies the weights (fused layout of model::LayerWeights) into parameters.
  CausalLm(const model::ModelConfig& config, const model::ModelWeights& weights,
           CausalLmOptions options);

  // tokens: [B, T] int64 -> logits [B, T, vocab] in acc_dtype(). `trace` receives the
  // kept positions of batch row 0 in every compressed layer.
  torch::Tensor forward(const torch::Tensor& tokens, LrsaTrace* trace = nullptr);
  // The final hidden states [B, T, d_model] fp32 (before the output head).
  torch::Tensor hidden_states(const torch::Tensor& tokens, LrsaTrace* trace = nullptr);
  // The output head applied to hidden states: [.., d_model] -> [.., vocab] fp32.
  torch::Tensor logits(const torch::Tensor& hidden);

  // One decoder layer: x [B, T, d_model] fp32 -> same. Public for activation
  // checkpointing.
  torch::Tensor layer_forward(int32_t layer, const torch::Tensor& x, LrsaTrace* trace);

  // The current weights in the engine's layout, on the host in fp32 (export).
  model::ModelWeights to_weights() const;
  const model::ModelConfig& config() const { return config_; }
  const CausalLmOptions& options() const { return options_; }
  // Norms, residuals, RoPE and logits: fp64 when computing in fp64, else fp32.
  torch::Dtype acc_dtype() const {
    return options_.compute_dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
  }

 private:
  struct Layer {
    torch::Tensor attn_norm, wqkv, bqkv, wo, ffn_norm, w_gate_up, w_down;
  };
  // cos and sin tables for positions [0, T): [T, head_dim / 2] fp32 on the device.
  std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t T, torch::Device device) const;

  model::ModelConfig config_;
  CausalLmOptions options_;
  // rope_tables by (T, device): built on the host once, not per layer and step.
  mutable std::map<std::pair<int64_t, std::string>, std::pair<torch::Tensor, torch::Tensor>> rope_cache_;
  torch::Tensor tok_embd_, out_norm_, output_;  // output_ undefined when tied
  std::vector<Layer> layers_;
};

// Mean cross-entropy of the tokens whose target flag is set, each predicted
// from the positions before it: logits [B, T, V], tokens and target [B, T]
// (target[:, 0] is ignored). Returns a scalar; also the number of targets.
std::pair<torch::Tensor, int64_t> lm_loss(const torch::Tensor& logits, const torch::Tensor& tokens,
                                          const torch::Tensor& target);

}  // namespace lagserve::trainer
