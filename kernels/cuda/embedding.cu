#include "kernels/cuda/embedding.h"

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_kernel(const bf16* table, const int32_t* tokens, float* x, int64_t dim) {
  const int64_t r = blockIdx.x;
  const bf16* src = table + static_cast<int64_t>(tokens[r]) * dim;
  float* dst = x + r * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

}  // namespace

void embedding(const bf16* table, const int32_t* tokens, float* x, int64_t n_rows, int64_t dim,
               cudaStream_t stream) {
  if (n_rows == 0) return;
  embedding_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(table, tokens, x, dim);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
