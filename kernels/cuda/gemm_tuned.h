// cuBLASLt GEMMs in gemm_bf16_nt's layout, each shape on the algorithm that
// timed fastest among cuBLASLt's heuristic candidates. At a decode batch's
// few rows the heuristic's first choice (the one cublasGemmEx takes) is not
// always the fastest: on an H100 at 32 rows gate_up of the Qwen2.5-1.5B shape
// runs in 23.8 us on the sixth candidate against 25.8 (bench_gemv).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

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

class GemmTuner {
 public:
  // The workspace (may be shared with cuBLAS on the same stream) outlives this.
  GemmTuner(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  ~GemmTuner();
  GemmTuner(const GemmTuner&) = delete;
  GemmTuner& operator=(const GemmTuner&) = delete;

  // Whether tune() has run for this shape.
  bool tuned(int64_t M, int64_t N, int64_t K, bool accumulate) const;

  // Times up to kCandidates of cuBLASLt's candidates for y[M, N] (+)= x[M, K]
  // * w[N, K]^T, each launched once on every matrix of `ws` in turn (a layer
  // stack's weights, so that they come from memory as in a step) after one
  // warm launch, and keeps the fastest (the first unless another beats it
  // by 2% and 0.3 us a launch). y is overwritten with garbage; x, y
  // and the matrices must be 256-byte aligned. Synchronises the stream, so
  // never while it is being captured.
  void tune(const bf16* x, const std::vector<const bf16*>& ws, float* y, int64_t M, int64_t N, int64_t K,
            bool accumulate);

  // y (+)= x w^T on the tuned algorithm; false, with nothing launched, when
  // the shape was not tuned, cuBLASLt offered nothing for it, or a pointer is
  // not 256-byte aligned (what the candidates were chosen for): the caller
  // then takes gemm_bf16_nt.
  bool run(const bf16* x, const bf16* w, float* y, int64_t M, int64_t N, int64_t K, bool accumulate) const;

  static constexpr int kCandidates = 8;

 private:
  struct Plan {
    std::unique_ptr<LtGemmDesc> desc;  // null: never tuned (pointers not aligned)
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;  // an algorithm was found
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, bool>;
  void launch(const Plan& p, const cublasLtMatmulAlgo_t& algo, const bf16* x, const bf16* w, float* y,
              bool accumulate) const;

  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  cublasLtHandle_t lt_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace lagserve::kernels::cuda
