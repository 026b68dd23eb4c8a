// What tensor parallelism adds to a decode step: two in-place all-reduces per
// layer of batch x d_model fp32 values (after the attention output and the MLP
// down projections), through NCCL across N GPUs, one thread per GPU as
// TensorParallelBackend drives them. Prints the mean time per step (the
// slowest rank's) and the bus bandwidth it implies (NCCL's convention for an
// all-reduce: 2 (N - 1) / N x bytes / time).
// Run (a machine with N GPUs):
//   build-gpu/bench/bench_tp_allreduce --gpus 2 --batch 32 --d-model 1536 --layers 28
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <cuda_runtime.h>

#include "engine/backend/cuda/cuda_resources.h"
#include "engine/backend/cuda/tp_comm.h"
#include "kernels/cuda/cuda_check.h"

using namespace lagserve;

int main(int argc, char** argv) {
  CLI::App app{"NCCL all-reduce time of a tensor-parallel decode step"};
  int gpus = 2, batch = 32, d_model = 1536, layers = 28, steps = 200;
  app.add_option("--gpus", gpus)->check(CLI::Range(1, 8));
  app.add_option("--batch", batch, "tokens in the step")->check(CLI::PositiveNumber);
  app.add_option("--d-model", d_model)->check(CLI::PositiveNumber);
  app.add_option("--layers", layers)->check(CLI::PositiveNumber);
  app.add_option("--steps", steps)->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  int n_devices = 0;
  if (cudaGetDeviceCount(&n_devices) != cudaSuccess) n_devices = 0;
  if (n_devices < gpus) {
    std::fprintf(stderr, "bench_tp_allreduce: --gpus %d, and %d present\n", gpus, n_devices);
    return 1;
  }
  std::vector<int> devices(gpus);
  for (int r = 0; r < gpus; ++r) devices[r] = r;
  auto comms = backend::cuda::make_nccl_comms(devices);
  if (!comms.ok()) {
    std::fprintf(stderr, "bench_tp_allreduce: %s\n", std::string(comms.status().message()).c_str());
    return 1;
  }
  const int64_t n = static_cast<int64_t>(batch) * d_model;
  std::vector<double> seconds(gpus);
  std::barrier sync(gpus);
  std::vector<std::thread> threads;
  for (int r = 0; r < gpus; ++r) {
    threads.emplace_back([&, r] {
      LAGSERVE_CUDA_CHECK(cudaSetDevice(r));
      backend::cuda::Stream stream;
      backend::cuda::DeviceArray<float> x(n);
      LAGSERVE_CUDA_CHECK(cudaMemsetAsync(x.get(), 0, n * sizeof(float), stream.get()));
      backend::cuda::TpComm& comm = *(*comms)[r];
      auto step = [&] {
        for (int l = 0; l < 2 * layers; ++l) comm.all_reduce_sum(x.get(), n, stream.get());
      };
      for (int i = 0; i < 10; ++i) step();  // warm-up: NCCL's connections
      stream.synchronize();
      sync.arrive_and_wait();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < steps; ++i) step();
      stream.synchronize();
      seconds[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
  }
  for (auto& t : threads) t.join();
  const double per_step = *std::max_element(seconds.begin(), seconds.end()) / steps;
  const double bytes = 2.0 * layers * n * sizeof(float);
  std::printf("%d GPUs, batch %d, d_model %d, %d layers: %d all-reduces of %.1f KiB per step, %.1f us per step "
              "(%.2f us each), bus bandwidth %.1f GB/s\n",
              gpus, batch, d_model, layers, 2 * layers, n * sizeof(float) / 1024.0, per_step * 1e6,
              per_step * 1e6 / (2 * layers), 2.0 * (gpus - 1) / gpus * bytes / per_step / 1e9);
  return 0;
}
