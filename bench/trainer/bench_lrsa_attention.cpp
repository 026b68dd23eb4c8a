// The attention op alone: LRSA (selection + block-sparse masked attention)
// against causal attention, forward and forward+backward, SmolLM2-135M head
// layout (9 query heads, 3 KV heads, d=64), bf16 on CUDA or fp32 on the CPU.
//   build-gpu/bench/bench_lrsa_attention --lengths 8192,16384,32768
#include <chrono>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "engine/kv/lag_policy.h"
#include "trainer/lag_select_torch.h"
#include "trainer/lrsa_attention.h"

namespace {

using namespace lagserve;

// Milliseconds per call of fn (mean of `reps` after two warm-up calls).
double time_ms(const std::function<void()>& fn, bool cuda, int reps) {
  for (int i = 0; i < 2; ++i) fn();
  if (cuda) torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  if (cuda) torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"LRSA attention op vs causal attention"};
  std::string lengths = "8192,16384", spec = "sink=16,lag=128,ratio=0.25";
  int heads = 9, kv_heads = 3, head_dim = 64, reps = 5;
  app.add_option("--lengths", lengths)->capture_default_str();
  app.add_option("--lagkv", spec)->capture_default_str();
  app.add_option("--heads", heads)->capture_default_str();
  app.add_option("--kv-heads", kv_heads)->capture_default_str();
  app.add_option("--head-dim", head_dim)->capture_default_str();
  app.add_option("--reps", reps)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const auto P = kv::LagPolicy::parse(spec);
  if (!P.ok()) return 1;
  const bool cuda = torch::cuda::is_available();
  const auto opt = torch::TensorOptions()
                       .dtype(cuda ? torch::kBFloat16 : torch::kFloat)
                       .device(cuda ? torch::kCUDA : torch::kCPU);
#if TORCH_VERSION_MAJOR >= 2
  // Which scaled_dot_product_attention kernels may run: "default", or only
  // "cudnn", "efficient" or "math" (flash takes no mask, so LRSA never uses it).
  std::string sdpa = "default";
  if (const char* e = std::getenv("LAGSERVE_SDPA")) sdpa = e;
  if (sdpa != "default") {
    auto& ctx = at::globalContext();
    ctx.setSDPUseCuDNN(sdpa == "cudnn");
    ctx.setSDPUseMemEfficient(sdpa == "efficient");
    ctx.setSDPUseMath(sdpa == "math");
  }
  fmt::print("SDPA kernels: {}\n", sdpa);
#endif
  fmt::print("| T | selection ms | LRSA fwd ms | causal fwd ms | LRSA fwd+bwd ms | causal fwd+bwd ms |\n");
  fmt::print("|---|---|---|---|---|---|\n");
  std::stringstream ss(lengths);
  for (std::string item; std::getline(ss, item, ',');) {
    const int64_t T = std::stoll(item);
    auto q = torch::randn({1, heads, T, head_dim}, opt).requires_grad_(true);
    auto k = torch::randn({1, kv_heads, T, head_dim}, opt).requires_grad_(true);
    auto v = torch::randn({1, kv_heads, T, head_dim}, opt).requires_grad_(true);
    const double sel = time_ms([&] { trainer::lag_selected_positions(k, v, *P); }, cuda, reps);
    const double lf = time_ms([&] {
      torch::NoGradGuard g;
      trainer::lrsa_attention(q, k, v, *P, 0, nullptr);
    }, cuda, reps);
    const double cf = time_ms([&] {
      torch::NoGradGuard g;
      trainer::causal_attention(q, k, v);
    }, cuda, reps);
    const double lb = time_ms([&] { trainer::lrsa_attention(q, k, v, *P, 0, nullptr).sum().backward(); }, cuda, reps);
    const double cb = time_ms([&] { trainer::causal_attention(q, k, v).sum().backward(); }, cuda, reps);
    fmt::print("| {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |\n", T, sel, lf, cf, lb, cb);
    std::fflush(stdout);
  }
  return 0;
}
