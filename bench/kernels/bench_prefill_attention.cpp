// prefill_attention speed: one causal prompt of --seq tokens over a paged bf16
// cache (contiguous block table), timed with CUDA events after warm-up; FLOPs
// counted as causal attention, 4 * seq^2 / 2 * heads * head_dim. Compare with
// bench/kernels/sdpa_anchor.py (torch SDPA flash) on the same GPU.
//   build/bench/bench_prefill_attention --seq 32768 --heads 12 --kv-heads 2 --head-dim 128
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <CLI/CLI.hpp>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/prefill_attention.h"

namespace {

using lagserve::kernels::cuda::bf16;

// Random bf16 in [-1, 1) on the device.
bf16* device_random_bf16(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<bf16> host(n);
  for (bf16& x : host) x = __float2bfloat16(u(rng));
  bf16* p = nullptr;
  LAGSERVE_CUDA_CHECK(cudaMalloc(&p, n * sizeof(bf16)));
  LAGSERVE_CUDA_CHECK(cudaMemcpy(p, host.data(), n * sizeof(bf16), cudaMemcpyHostToDevice));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"prefill_attention: causal prompt over the paged bf16 cache"};
  int seq = 32768, heads = 12, kv_heads = 2, head_dim = 128, block_size = 16, iters = 20;
  app.add_option("--seq", seq, "prompt tokens (ctx_first = 1, n_q = seq)")->capture_default_str();
  app.add_option("--heads", heads)->capture_default_str();
  app.add_option("--kv-heads", kv_heads)->capture_default_str();
  app.add_option("--head-dim", head_dim, "64 or 128")->capture_default_str();
  app.add_option("--block-size", block_size, "cache block size")->capture_default_str();
  app.add_option("--iters", iters)->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::fprintf(stderr, "bench_prefill_attention: no CUDA device\n");
    return 1;
  }
  std::mt19937 rng(1);
  const int n_blocks = (seq + block_size - 1) / block_size;
  const size_t pool_elems = static_cast<size_t>(n_blocks) * kv_heads * block_size * head_dim;
  bf16* k = device_random_bf16(pool_elems, rng);
  bf16* v = device_random_bf16(pool_elems, rng);
  std::vector<int32_t> table(n_blocks);
  for (int i = 0; i < n_blocks; ++i) table[i] = i;
  int32_t* d_table = nullptr;
  LAGSERVE_CUDA_CHECK(cudaMalloc(&d_table, table.size() * sizeof(int32_t)));
  LAGSERVE_CUDA_CHECK(cudaMemcpy(d_table, table.data(), table.size() * sizeof(int32_t),
                                 cudaMemcpyHostToDevice));
  const size_t q_elems = static_cast<size_t>(seq) * heads * head_dim;
  std::vector<float> q_host(q_elems);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& x : q_host) x = u(rng);
  float* q = nullptr;
  bf16* out = nullptr;
  LAGSERVE_CUDA_CHECK(cudaMalloc(&q, q_elems * sizeof(float)));
  LAGSERVE_CUDA_CHECK(cudaMemcpy(q, q_host.data(), q_elems * sizeof(float),
                                 cudaMemcpyHostToDevice));
  LAGSERVE_CUDA_CHECK(cudaMalloc(&out, q_elems * sizeof(bf16)));

  const lagserve::kernels::cuda::PagedKvBf16 kv{k, v, kv_heads, block_size, head_dim};
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  auto run = [&] {
    lagserve::kernels::cuda::prefill_attention(kv, d_table, 1, q, heads * head_dim, out, seq,
                                               heads, scale, nullptr, nullptr);
  };
  for (int i = 0; i < 3; ++i) run();
  LAGSERVE_CUDA_CHECK(cudaDeviceSynchronize());

  // The output must be finite before its speed means anything.
  std::vector<bf16> out_host(q_elems);
  LAGSERVE_CUDA_CHECK(cudaMemcpy(out_host.data(), out, q_elems * sizeof(bf16),
                                 cudaMemcpyDeviceToHost));
  for (const bf16& x : out_host) {
    if (!std::isfinite(__bfloat162float(x))) {
      std::fprintf(stderr, "bench_prefill_attention: non-finite output\n");
      return 1;
    }
  }

  cudaEvent_t start, stop;
  LAGSERVE_CUDA_CHECK(cudaEventCreate(&start));
  LAGSERVE_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms(iters);
  for (int i = 0; i < iters; ++i) {
    LAGSERVE_CUDA_CHECK(cudaEventRecord(start));
    run();
    LAGSERVE_CUDA_CHECK(cudaEventRecord(stop));
    LAGSERVE_CUDA_CHECK(cudaEventSynchronize(stop));
    LAGSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms[i], start, stop));
  }
  std::sort(ms.begin(), ms.end());
  const double median_ms = ms[iters / 2];
  const double flops = 4.0 * seq * static_cast<double>(seq) / 2 * heads * head_dim;
  std::printf("prefill_attention T=%d heads=%d/%d d=%d: %.2f ms, %.0f TFLOP/s (median of %d; "
              "min %.2f ms)\n",
              seq, heads, kv_heads, head_dim, median_ms, flops / (median_ms * 1e-3) / 1e12, iters,
              ms[0]);

  LAGSERVE_CUDA_CHECK(cudaEventDestroy(start));
  LAGSERVE_CUDA_CHECK(cudaEventDestroy(stop));
  LAGSERVE_CUDA_CHECK(cudaFree(k));
  LAGSERVE_CUDA_CHECK(cudaFree(v));
  LAGSERVE_CUDA_CHECK(cudaFree(d_table));
  LAGSERVE_CUDA_CHECK(cudaFree(q));
  LAGSERVE_CUDA_CHECK(cudaFree(out));
  return 0;
}
