// Checked CUDA and cuBLAS calls. A failed call is a bug or a broken device, so
// it aborts with the call, the error and where it was made.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace lagserve::kernels::cuda {

[[noreturn]] void cuda_fail(const char* expr, cudaError_t err, const char* file, int line);
[[noreturn]] void cublas_fail(const char* expr, cublasStatus_t st, const char* file, int line);

// Blocks of `threads` threads that cover n items.
inline unsigned int blocks_for(long long n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

}  // namespace lagserve::kernels::cuda

#define LAGSERVE_CUDA_CHECK(expr)                                              \
  do {                                                                         \
    const cudaError_t lagserve_err_ = (expr);                                  \
    if (lagserve_err_ != cudaSuccess)                                          \
      ::lagserve::kernels::cuda::cuda_fail(#expr, lagserve_err_, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports a bad launch configuration at once.
#define LAGSERVE_CUDA_CHECK_LAUNCH() LAGSERVE_CUDA_CHECK(cudaGetLastError())

#define LAGSERVE_CUBLAS_CHECK(expr)                                            \
  do {                                                                         \
    const cublasStatus_t lagserve_st_ = (expr);                                \
    if (lagserve_st_ != CUBLAS_STATUS_SUCCESS)                                 \
      ::lagserve::kernels::cuda::cublas_fail(#expr, lagserve_st_, __FILE__, __LINE__); \
  } while (0)
