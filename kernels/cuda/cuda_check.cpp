#include "kernels/cuda/cuda_check.h"

#include <cstdio>
#include <cstdlib>

namespace lagserve::kernels::cuda {

void cuda_fail(const char* expr, cudaError_t err, const char* file, int line) {
  std::fprintf(stderr, "lagserve: CUDA error %s (%s) in %s at %s:%d\n", cudaGetErrorName(err),
               cudaGetErrorString(err), expr, file, line);
  std::abort();
}

void cublas_fail(const char* expr, cublasStatus_t st, const char* file, int line) {
  std::fprintf(stderr, "lagserve: cuBLAS error %s (%s) in %s at %s:%d\n",
               cublasGetStatusName(st), cublasGetStatusString(st), expr, file, line);
  std::abort();
}

}  // namespace lagserve::kernels::cuda
