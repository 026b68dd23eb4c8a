// Training step time, LRSA against full attention (issue: LRSA <= 1.3x full
// at 8K on the H200). One step = forward, backward and AdamW update over one
// sequence of T tokens (loss on every token), timed after warm-up steps.
//   build/bench/bench_train_step --model default --lengths 2048,8192
//   build-gpu/bench/bench_train_step --shape smollm2-135m --device cuda
// --shape builds random weights of a known shape (the step time does not
// depend on the values), for machines without the model file.
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "trainer/causal_lm.h"

namespace {

using namespace lagserve;

// SmolLM2-135M-Instruct (the default model): llama, 30 layers, tied head.
model::ModelConfig smollm2_135m() {
  model::ModelConfig c;
  c.arch = model::Arch::Llama;
  c.arch_name = "llama";
  c.n_layers = 30;
  c.d_model = 576;
  c.n_heads = 9;
  c.n_kv_heads = 3;
  c.head_dim = 64;
  c.d_ff = 1536;
  c.vocab_size = 49152;
  c.max_positions = 8192;
  c.rms_eps = 1e-5f;
  c.rope_theta = 100000.f;
  c.rope_inv_freq = model::rope_inv_freq_base(c.rope_theta, c.head_dim);
  c.tied_embeddings = true;
  return c;
}

model::ModelWeights random_weights(const model::ModelConfig& c) {
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.f, 0.02f);
  const auto fill = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
  };
  model::ModelWeights w;
  w.tok_embd = fill(static_cast<size_t>(c.vocab_size) * c.d_model);
  w.out_norm.assign(c.d_model, 1.f);
  for (int32_t l = 0; l < c.n_layers; ++l) {
    model::LayerWeights lw;
    lw.attn_norm.assign(c.d_model, 1.f);
    lw.wqkv = fill(static_cast<size_t>(c.q_dim() + 2 * c.kv_dim()) * c.d_model);
    lw.wo = fill(static_cast<size_t>(c.d_model) * c.q_dim());
    lw.ffn_norm.assign(c.d_model, 1.f);
    lw.w_gate_up = fill(static_cast<size_t>(2 * c.d_ff) * c.d_model);
    lw.w_down = fill(static_cast<size_t>(c.d_model) * c.d_ff);
    w.layers.push_back(std::move(lw));
  }
  return w;
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

// Seconds per training step (mean over `steps` after `warmup`).
double time_steps(trainer::CausalLm& lm, int64_t T, int warmup, int steps, torch::Device device) {
  torch::optim::AdamW opt(lm.parameters(), torch::optim::AdamWOptions(1e-5));
  const auto tokens = torch::randint(3, lm.config().vocab_size, {1, T}, torch::kLong).to(device);
  const auto target = torch::ones({1, T}, torch::kUInt8).to(device);
  double total = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    sync(device);
    const auto t0 = std::chrono::steady_clock::now();
    opt.zero_grad();
    trainer::lm_loss(lm.forward(tokens), tokens, target).first.backward();
    opt.step();
    sync(device);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) total += s;
  }
  return total / steps;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Training step time: LRSA vs full attention"};
  std::string model_path = "default", shape, lengths = "2048,8192", policy_spec = "sink=16,lag=128,ratio=0.25";
  std::string device_name = "auto";
  int warmup = 1, steps = 3, threads = 0;
  bool checkpointing = false;
  app.add_option("--model", model_path, "Model file or folder")->capture_default_str();
  app.add_option("--shape", shape, "Random weights of a known shape instead: smollm2-135m");
  app.add_option("--lengths", lengths, "Comma-separated sequence lengths")->capture_default_str();
  app.add_option("--lagkv", policy_spec, "LRSA policy")->capture_default_str();
  app.add_option("--device", device_name, "cpu, cuda or auto")->capture_default_str();
  app.add_option("--warmup", warmup, "Untimed steps")->capture_default_str();
  app.add_option("--steps", steps, "Timed steps")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all)");
  app.add_flag("--activation-checkpointing", checkpointing, "Recompute layers in the backward pass");
  CLI11_PARSE(app, argc, argv);

  const bool cuda = device_name == "cuda" || (device_name == "auto" && torch::cuda::is_available());
  const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  torch::set_num_threads(threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency()));
  auto policy = kv::LagPolicy::parse(policy_spec);
  if (!policy.ok()) {
    fmt::print(stderr, "--lagkv: {}\n", std::string(policy.status().message()));
    return 1;
  }
  model::ModelConfig config;
  model::ModelWeights weights;
  if (shape == "smollm2-135m") {
    config = smollm2_135m();
    weights = random_weights(config);
  } else if (!shape.empty()) {
    fmt::print(stderr, "--shape: unknown shape '{}' (known: smollm2-135m)\n", shape);
    return 1;
  } else {
    auto path = model::resolve_model_path(model_path);
    auto m = path.ok() ? model::load_model(*path) : absl::StatusOr<std::unique_ptr<model::Model>>(path.status());
    if (!m.ok()) {
      fmt::print(stderr, "{}\n", std::string(m.status().message()));
      return 1;
    }
    config = (*m)->config;
    weights = std::move((*m)->weights);
  }
  fmt::print("device {}, {} layers, d_model {}, policy {}, {} compute, activation checkpointing {}\n",
             cuda ? "cuda" : fmt::format("cpu ({} threads)", torch::get_num_threads()), config.n_layers,
             config.d_model, policy->to_string(), cuda ? "bf16" : "fp32", checkpointing ? "on" : "off");
  fmt::print("| tokens | full attention s/step | LRSA s/step | LRSA / full | LRSA tokens/s |\n");
  fmt::print("|---|---|---|---|---|\n");
  std::stringstream ss(lengths);
  for (std::string item; std::getline(ss, item, ',');) {
    const int64_t T = std::stoll(item);
    double secs[2];
    for (int mode = 0; mode < 2; ++mode) {
      trainer::CausalLmOptions opt;
      opt.attention = mode == 0 ? trainer::AttentionMode::Full : trainer::AttentionMode::Lrsa;
      opt.policy = *policy;
      opt.checkpoint_activations = checkpointing;
      opt.compute_dtype = cuda ? torch::kBFloat16 : torch::kFloat;
      trainer::CausalLm lm(config, weights, opt);
      lm.to(device);
      lm.train();
      secs[mode] = time_steps(lm, T, warmup, steps, device);
    }
    fmt::print("| {} | {:.3f} | {:.3f} | {:.2f}x | {:.0f} |\n", T, secs[0], secs[1], secs[1] / secs[0],
               T / secs[1]);
    std::fflush(stdout);
  }
  return 0;
}
