// The CPU backend: fp32 forward pass with OpenBLAS GEMMs and a thread pool
// over a paged KV cache.
#pragma once

#include <functional>
#include <memory>
#include <vector>

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
  // Tests, runs of one sequence: where this returns positions for a due
  // partition (layer, KV head, partition), the compaction keeps them (the
  // absolute positions an EvictionRecord reports) instead of the backend's
  // own top-K, while the trace still reports the backend's own. A reference
  // follows the selections of the backend under test as teacher forcing
  // makes it follow its tokens, so that one near-tie of the top-K does not
  // leave the two caches holding different tokens for the rest of the run.
  std::function<const std::vector<int32_t>*(int32_t layer, int32_t kv_head, int32_t partition)>
      follow_selections;
};

// The model must outlive the backend.
absl::StatusOr<std::unique_ptr<Backend>> make_cpu_backend(const model::Model& model,
                                                          const CpuBackendOptions& options);

}  // namespace lagserve::backend
