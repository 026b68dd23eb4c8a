#include "kernels/cuda/gemm_lt.h"

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {

LtGemmDesc::LtGemmDesc(int64_t M, int64_t N, int64_t K) {
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  LAGSERVE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LAGSERVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  LAGSERVE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  LAGSERVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a, CUDA_R_16BF, K, N, K));
  LAGSERVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b, CUDA_R_16BF, K, M, K));
  LAGSERVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, N, M, N));
}

LtGemmDesc::~LtGemmDesc() {
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(c);
  cublasLtMatmulDescDestroy(op);
}

}  // namespace lagserve::kernels::cuda
