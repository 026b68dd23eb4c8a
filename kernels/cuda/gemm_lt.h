// For timing cuBLASLt's algorithms against cublasGemmEx (bench_gemv
// --lt-algos, --lt-sweep). Running a step's products on the fastest of them
// was measured and did not pay (docs/cuda.md, "Tuned GEMMs in a step").
#pragma once

#include <cstdint>

#include <cublasLt.h>

namespace lagserve::kernels::cuda {

// cuBLASLt's descriptors of gemm_bf16_nt's product y[M, N] = x[M, K] *
// w[N, K]^T (column-major: y^T [N, M] = w x^T; bf16 in, fp32 compute and
// out), owned.
struct LtGemmDesc {
  LtGemmDesc(int64_t M, int64_t N, int64_t K);
  ~LtGemmDesc();
  LtGemmDesc(const LtGemmDesc&) = delete;
  LtGemmDesc& operator=(const LtGemmDesc&) = delete;
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // w, x, y
};

}  // namespace lagserve::kernels::cuda
