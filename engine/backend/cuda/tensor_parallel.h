// Tensor-parallel serving: one model sharded over N GPUs of a node
// (model::shard_model), one CUDA backend per rank driven by its own thread,
// joined by NCCL all-reduces after the attention output and MLP down
// projections. To the runtime it is one Backend: the same config, block
// tables and steps; rank 0 returns the logits and the sampled tokens, each
// rank's KV cache holds its KV heads (with more ranks than KV heads, each
// head on several ranks), and the LagKV selection (per KV head) runs on the
// ranks that hold the head.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/model/model.h"

namespace lagserve::backend {

struct TensorParallelOptions {
  int32_t size = 1;
  // Every rank on CudaBackendOptions::device, joined by a stand-in for NCCL
  // (which refuses two ranks on one GPU), for tests where one GPU is lent
  // (kv_cache_bytes must be set); else rank r on device options.device + r,
  // joined by NCCL.
  bool single_device = false;
};

// Fails with a clear status when N does not split the model's heads or FFN
// width (model::check_tensor_parallel), when fewer than N GPUs are present,
// without NCCL, or as make_cuda_backend fails on any rank. Each rank sizes its cache from its own
// GPU's memory (or options.kv_cache_bytes, per rank); n_blocks() is the least.
absl::StatusOr<std::unique_ptr<Backend>> make_tensor_parallel_backend(const model::Model& model,
                                                                      const CudaBackendOptions& options,
                                                                      const TensorParallelOptions& tp);

}  // namespace lagserve::backend
