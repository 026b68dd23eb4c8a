#include "kernels/cuda/embedding.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_kernel(const bf16* table, const int32_t* tokens, float* x, int64_t dim) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t r = blockIdx.x;
  const bf16* src = table + static_cast<int64_t>(tokens[r]) * dim;
  float* dst = x + r * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

}  // namespace

void embedding(const bf16* table, const int32_t* tokens, float* x, int64_t n_rows, int64_t dim,
               cudaStream_t stream) {
  if (n_rows == 0) return;
  launch_pdl(embedding_kernel, dim3(static_cast<unsigned>(n_rows)), dim3(kThreads), 0, stream, table,
             tokens, x, dim);
}

}  // namespace lagserve::kernels::cuda
