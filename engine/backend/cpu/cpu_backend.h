// The CPU backend: fp32 forward pass with OpenBLAS GEMMs and a thread pool
// over a paged KV cache.
#pragma once

#include <memory>

#include "engine/backend/backend.h"
#include "engine/model/model.h"

namespace lagserve::backend {

struct CpuBackendOptions {
  int n_threads = 2;
  int32_t block_size = 16;
  int64_t kv_cache_bytes = 1LL << 30;  // storage for K and V of all layers
  bool poison_kv = false;              // fill the cache with NaN first (tests)
  // Round to bf16 what the CUDA backend keeps in bf16: the weight matrices
  // (a rounded copy), the inputs of every GEMM and the K/V cache. The CPU then
  // computes what the GPU computes, up to fp32 summation order and the
  // transcendental functions: the reference the CUDA tests compare against.
  bool bf16_rounding = false;
};

// The model must outlive the backend.
absl::StatusOr<std::unique_ptr<Backend>> make_cpu_backend(const model::Model& model,
                                                          const CpuBackendOptions& options);

}  // namespace lagserve::backend
