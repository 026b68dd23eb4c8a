// CausalLm: the decoder forward in LibTorch ops, mirroring the engine's CPU
// forward (engine/backend/cpu) so that the two agree position by position.
#include "trainer/causal_lm.h"

#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "engine/common/check.h"

namespace lagserve::trainer {

namespace F = torch::nn::functional;

namespace {

torch::Tensor param_from(const std::vector<float>& data, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  LAGSERVE_CHECK(static_cast<int64_t>(data.size()) == n, "weight has {} values, shape needs {}",
                 data.size(), n);
  return torch::from_blob(const_cast<float*>(data.data()), shape, torch::kFloat).clone();
}

std::vector<float> host_values(const torch::Tensor& t) {
  const auto h = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  return std::vector<float>(h.data_ptr<float>(), h.data_ptr<float>() + h.numel());
}

torch::Tensor rmsnorm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * w;
}

// NeoX rotation of x [B, heads, T, D] in the accumulation dtype (that of
// cos and sin): channel i pairs with i + D/2.
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const auto xf = x.to(cos.scalar_type());
  const auto a = xf.narrow(-1, 0, half), b = xf.narrow(-1, half, half);
  return torch::cat({a * cos - b * sin, b * cos + a * sin}, -1).to(x.scalar_type());
}

// Activation checkpointing of one layer: the forward keeps only the layer's
// input; the backward recomputes the layer with gradients and runs it
// backward (the reentrant form of torch.utils.checkpoint).
struct CheckpointedLayer : public torch::autograd::Function<CheckpointedLayer> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               int64_t model_address, int64_t layer) {
    ctx->save_for_backward({x});
    ctx->saved_data["model"] = model_address;
    ctx->saved_data["layer"] = layer;
    auto* model = reinterpret_cast<CausalLm*>(model_address);
    torch::NoGradGuard no_grad;
    return model->layer_forward(static_cast<int32_t>(layer), x, nullptr);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto* model = reinterpret_cast<CausalLm*>(ctx->saved_data["model"].toInt());
    const auto layer = static_cast<int32_t>(ctx->saved_data["layer"].toInt());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode grad_mode(true);
      y = model->layer_forward(layer, x, nullptr);
    }
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

CausalLm::CausalLm(const model::ModelConfig& config, const model::ModelWeights& w,
                   CausalLmOptions options)
    : config_(config), options_(std::move(options)) {
  const auto& c = config_;
  const int64_t d = c.d_model, qkv = c.q_dim() + 2 * c.kv_dim();
  tok_embd_ = register_parameter("tok_embd", param_from(w.tok_embd, {c.vocab_size, d}));
  out_norm_ = register_parameter("out_norm", param_from(w.out_norm, {d}));
  if (!w.output.empty()) {
    output_ = register_parameter("output", param_from(w.output, {c.vocab_size, d}));
  }
  LAGSERVE_CHECK(static_cast<int32_t>(w.layers.size()) == c.n_layers, "{} layers of weights, config says {}",
                 w.layers.size(), c.n_layers);
  for (int32_t l = 0; l < c.n_layers; ++l) {
    const auto& lw = w.layers[l];
    const auto name = [l](const char* what) { return fmt::format("layer{}_{}", l, what); };
    Layer layer;
    layer.attn_norm = register_parameter(name("attn_norm"), param_from(lw.attn_norm, {d}));
    layer.wqkv = register_parameter(name("wqkv"), param_from(lw.wqkv, {qkv, d}));
    if (!lw.bqkv.empty()) {
      layer.bqkv = register_parameter(name("bqkv"), param_from(lw.bqkv, {qkv}));
    }
    layer.wo = register_parameter(name("wo"), param_from(lw.wo, {d, c.q_dim()}));
    layer.ffn_norm = register_parameter(name("ffn_norm"), param_from(lw.ffn_norm, {d}));
    layer.w_gate_up = register_parameter(name("w_gate_up"), param_from(lw.w_gate_up, {2LL * c.d_ff, d}));
    layer.w_down = register_parameter(name("w_down"), param_from(lw.w_down, {d, c.d_ff}));
    layers_.push_back(std::move(layer));
  }
}

std::pair<torch::Tensor, torch::Tensor> CausalLm::rope_tables(int64_t T, torch::Device device) const {
  const auto key = std::make_pair(T, device.str());
  if (auto it = rope_cache_.find(key); it != rope_cache_.end()) return it->second;
  if (rope_cache_.size() >= 8) rope_cache_.clear();
  const int64_t half = config_.head_dim / 2;
  auto cos = torch::empty({T, half}, torch::kFloat), sin = torch::empty({T, half}, torch::kFloat);
  float* cp = cos.data_ptr<float>();
  float* sp = sin.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      // The engine's rounding (kernels/cpu/rope.cpp): fp32 product, then cos/sin.
      const float angle = static_cast<float>(t) * config_.rope_inv_freq[i];
      cp[t * half + i] = std::cos(angle);
      sp[t * half + i] = std::sin(angle);
    }
  }
  return rope_cache_[key] = {cos.to(device, acc_dtype()), sin.to(device, acc_dtype())};
}

torch::Tensor CausalLm::layer_forward(int32_t l, const torch::Tensor& x, LrsaTrace* trace) {
  const auto& c = config_;
  const Layer& w = layers_[l];
  const auto cd = options_.compute_dtype;
  const int64_t B = x.size(0), T = x.size(1), D = c.head_dim;
  const auto [cos, sin] = rope_tables(T, x.device());

  const auto h = rmsnorm(x, w.attn_norm, c.rms_eps).to(cd);
  const auto qkv = F::linear(h, w.wqkv.to(cd), w.bqkv.defined() ? w.bqkv.to(cd) : torch::Tensor());
  // q: [B, H, T, D], k, v: [B, KVH, T, D]
  const auto heads = [&](int64_t begin, int64_t n) {
    return qkv.narrow(-1, begin, n * D).view({B, T, n, D}).transpose(1, 2);
  };
  const auto q = rope(heads(0, c.n_heads), cos, sin);
  const auto k = rope(heads(c.q_dim(), c.n_kv_heads), cos, sin).contiguous();
  const auto v = heads(c.q_dim() + c.kv_dim(), c.n_kv_heads).contiguous();
  const bool compressed =
      options_.attention == AttentionMode::Lrsa && options_.policy.layer_compressed(l);
  const auto att = compressed ? lrsa_attention(q, k, v, options_.policy, l, trace)
                              : causal_attention(q, k, v);
  auto y = x + F::linear(att.transpose(1, 2).reshape({B, T, c.q_dim()}).to(cd), w.wo.to(cd))
                   .to(acc_dtype());

  const auto h2 = rmsnorm(y, w.ffn_norm, c.rms_eps).to(cd);
  const auto gu = F::linear(h2, w.w_gate_up.to(cd));
  const auto act = F::silu(gu.narrow(-1, 0, c.d_ff)) * gu.narrow(-1, c.d_ff, c.d_ff);
  return y + F::linear(act, w.w_down.to(cd)).to(acc_dtype());
}

torch::Tensor CausalLm::hidden_states(const torch::Tensor& tokens, LrsaTrace* trace) {
  const int64_t B = tokens.size(0), T = tokens.size(1);
  auto x = tok_embd_.index_select(0, tokens.reshape({-1})).view({B, T, config_.d_model});
  for (int32_t l = 0; l < config_.n_layers; ++l) {
    if (options_.checkpoint_activations && is_training() && torch::GradMode::is_enabled()) {
      x = CheckpointedLayer::apply(x, reinterpret_cast<int64_t>(this), static_cast<int64_t>(l));
    } else {
      x = layer_forward(l, x, trace);
    }
  }
  return x;
}

torch::Tensor CausalLm::logits(const torch::Tensor& hidden) {
  const auto& head = output_.defined() ? output_ : tok_embd_;
  const auto cd = options_.compute_dtype;
  return F::linear(rmsnorm(hidden, out_norm_, config_.rms_eps).to(cd), head.to(cd)).to(acc_dtype());
}

torch::Tensor CausalLm::forward(const torch::Tensor& tokens, LrsaTrace* trace) {
  return logits(hidden_states(tokens, trace));
}

model::ModelWeights CausalLm::to_weights() const {
  model::ModelWeights w;
  w.tok_embd = host_values(tok_embd_);
  w.out_norm = host_values(out_norm_);
  if (output_.defined()) w.output = host_values(output_);
  for (const Layer& layer : layers_) {
    model::LayerWeights lw;
    lw.attn_norm = host_values(layer.attn_norm);
    lw.wqkv = host_values(layer.wqkv);
    if (layer.bqkv.defined()) lw.bqkv = host_values(layer.bqkv);
    lw.wo = host_values(layer.wo);
    lw.ffn_norm = host_values(layer.ffn_norm);
    lw.w_gate_up = host_values(layer.w_gate_up);
    lw.w_down = host_values(layer.w_down);
    w.layers.push_back(std::move(lw));
  }
  return w;
}

std::pair<torch::Tensor, int64_t> lm_loss(const torch::Tensor& logits, const torch::Tensor& tokens,
                                          const torch::Tensor& target) {
  const int64_t V = logits.size(-1), T = logits.size(1);
  const auto labels = tokens.narrow(1, 1, T - 1)
                          .masked_fill(target.narrow(1, 1, T - 1) == 0, -100)
                          .reshape({-1});
  const int64_t n = (labels != -100).sum().item<int64_t>();
  const auto pred = logits.narrow(1, 0, T - 1).reshape({-1, V});
  const auto sum = F::cross_entropy(
      pred, labels, F::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  return {sum / static_cast<double>(std::max<int64_t>(n, 1)), n};
}

}  // namespace lagserve::trainer
