#include "kernels/cuda/gemm.h"

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {

void gemm_bf16_nt(cublasHandle_t handle, const bf16* x, const bf16* w, float* y, int64_t M,
                  int64_t N, int64_t K, bool accumulate) {
  if (M == 0 || N == 0) return;
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  // Column-major view: y^T [N, M] = w [N, K] (a K x N column-major matrix,
  // transposed) times x^T [K, M] (x as a K x M column-major matrix).
  LAGSERVE_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N),
                                     static_cast<int>(M), static_cast<int>(K), &alpha, w,
                                     CUDA_R_16BF, static_cast<int>(K), x, CUDA_R_16BF,
                                     static_cast<int>(K), &beta, y, CUDA_R_32F,
                                     static_cast<int>(N), CUBLAS_COMPUTE_32F,
                                     CUBLAS_GEMM_DEFAULT));
}

}  // namespace lagserve::kernels::cuda
