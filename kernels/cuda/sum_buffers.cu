#include "kernels/cuda/sum_buffers.h"

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

struct Sources {
  const float* p[kMaxSumBuffers];
};

__global__ void sum_buffers_kernel(Sources srcs, int n_srcs, float* dst, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float s = srcs.p[0][i];
  for (int j = 1; j < n_srcs; ++j) s += srcs.p[j][i];
  dst[i] = s;
}

}  // namespace

void sum_buffers(const float* const* srcs, int n_srcs, float* dst, int64_t n, cudaStream_t stream) {
  if (n_srcs < 1 || n_srcs > kMaxSumBuffers) {
    std::fprintf(stderr, "sum_buffers: %d buffers, expected 1 to %d\n", n_srcs, kMaxSumBuffers);
    std::abort();
  }
  if (n == 0) return;
  Sources s{};
  for (int j = 0; j < n_srcs; ++j) s.p[j] = srcs[j];
  sum_buffers_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(s, n_srcs, dst, n);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
