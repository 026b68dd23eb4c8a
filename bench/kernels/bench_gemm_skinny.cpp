// gemm_bf16_nt at a few rows (decode of a small batch) on the linear layers of
// the Qwen2.5-1.5B shape, against cuBLAS (cublasGemmEx, the same call the
// kernel makes for larger M) on the same buffers, timed with CUDA events over
// CUDA-graph replays of --reps back-to-back calls (so launch gaps do not count)
// after warm-up; the bandwidth counts the weight bytes read once.
//   build/bench/bench_gemm_skinny [--rows 1] [--reps 50]
#include <cstdint>
#include <cstdio>
#include <random>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"

namespace {

using lagserve::kernels::cuda::bf16;

bf16* device_random_bf16(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<bf16> host(n);
  for (bf16& x : host) x = __float2bfloat16(u(rng));
  bf16* p = nullptr;
  LAGSERVE_CUDA_CHECK(cudaMalloc(&p, n * sizeof(bf16)));
  LAGSERVE_CUDA_CHECK(cudaMemcpy(p, host.data(), n * sizeof(bf16), cudaMemcpyHostToDevice));
  return p;
}

// Mean ms of one call, from a graph of `reps` calls replayed `iters` times.
template <typename F>
double time_ms(cudaStream_t st, int reps, int iters, F&& call) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  LAGSERVE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int r = 0; r < reps; ++r) call();
  LAGSERVE_CUDA_CHECK(cudaStreamEndCapture(st, &g));
  LAGSERVE_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  LAGSERVE_CUDA_CHECK(cudaGraphLaunch(ge, st));  // warm-up
  cudaEvent_t a, b;
  LAGSERVE_CUDA_CHECK(cudaEventCreate(&a));
  LAGSERVE_CUDA_CHECK(cudaEventCreate(&b));
  LAGSERVE_CUDA_CHECK(cudaEventRecord(a, st));
  for (int i = 0; i < iters; ++i) LAGSERVE_CUDA_CHECK(cudaGraphLaunch(ge, st));
  LAGSERVE_CUDA_CHECK(cudaEventRecord(b, st));
  LAGSERVE_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  LAGSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return ms / (static_cast<double>(iters) * reps);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gemm_bf16_nt at a few rows against cuBLAS"};
  int rows = 1, reps = 50, iters = 20;
  app.add_option("--rows", rows, "M, 1 to 8 (our kernel's range)")->capture_default_str();
  app.add_option("--reps", reps)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--iters", iters)->capture_default_str()->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::fprintf(stderr, "bench_gemm_skinny: no CUDA device\n");
    return 1;
  }
  cudaStream_t st;
  LAGSERVE_CUDA_CHECK(cudaStreamCreate(&st));
  cublasHandle_t h;
  LAGSERVE_CUBLAS_CHECK(cublasCreate(&h));
  LAGSERVE_CUBLAS_CHECK(cublasSetStream(h, st));
  void* ws = nullptr;
  LAGSERVE_CUDA_CHECK(cudaMalloc(&ws, 32 << 20));
  LAGSERVE_CUBLAS_CHECK(cublasSetWorkspace(h, ws, 32 << 20));
  std::mt19937 rng(1);
  std::printf("| layer (N x K) | M | ours: us, TB/s | cuBLAS: us, TB/s |\n|---|---|---|---|\n");
  for (const auto& [name, N, K] : {std::tuple{"qkv", 2048, 1536}, std::tuple{"o", 1536, 1536},
                                   std::tuple{"gate_up", 17920, 1536}, std::tuple{"down", 1536, 8960},
                                   std::tuple{"lm_head", 151936, 1536}}) {
    bf16* w = device_random_bf16(static_cast<size_t>(N) * K, rng);
    bf16* x = device_random_bf16(static_cast<size_t>(rows) * K, rng);
    float* y = nullptr;
    LAGSERVE_CUDA_CHECK(cudaMalloc(&y, static_cast<size_t>(rows) * N * sizeof(float)));
    const double bytes = 2.0 * N * K;
    const double ours = time_ms(st, reps, iters, [&] {
      lagserve::kernels::cuda::gemm_bf16_nt(h, x, w, y, rows, N, K, false);
    });
    const float alpha = 1.f, beta = 0.f;
    const double blas = time_ms(st, reps, iters, [&] {
      LAGSERVE_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, rows, K, &alpha, w,
                                         CUDA_R_16BF, K, x, CUDA_R_16BF, K, &beta, y, CUDA_R_32F,
                                         N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    });
    std::printf("| %s (%d x %d) | %d | %.1f, %.2f | %.1f, %.2f |\n", name, N, K, rows, ours * 1e3,
                bytes / ours / 1e9, blas * 1e3, bytes / blas / 1e9);
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
  }
  cublasDestroy(h);
  return 0;
}
