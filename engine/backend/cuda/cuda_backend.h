// The CUDA backend: the decoder stack in bf16 on one GPU (weights and the
// paged KV cache in bf16; the residual stream, GEMM outputs, softmax and
// LagKV scoring in fp32), with the same Backend contract as the CPU's.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/model/model.h"

namespace lagserve::backend {

namespace cuda {
class TpComm;
}

// Where a step's wall time goes on the host, summed over steps: planning and
// enqueuing the metadata upload, launching the stack (a graph replay or each
// kernel) and the sampling, waiting for the GPU, and reading results back.
// The GPU idles at least through `plan` (bench_cuda_decode prints them).
struct CudaStepTimes {
  double plan_s = 0, launch_s = 0, wait_s = 0, after_s = 0;
  int64_t steps = 0;
};

struct CudaBackendOptions {
  int device = 0;
  int32_t block_size = 16;
  // KV cache storage; 0: what gpu_memory_utilization leaves after the weights
  // and the activation buffers.
  int64_t kv_cache_bytes = 0;
  double gpu_memory_utilization = 0.9;  // share of the GPU's memory lagserve may hold
  int32_t max_batched_tokens = 2048;    // sizes the activation buffers up front
  int32_t max_seqs = 64;
  bool poison_kv = false;  // fill the cache with NaN first (tests)
  // Replay decode steps as CUDA graphs (one per batch size and context
  // bucket); LAGSERVE_CUDA_GRAPHS=0 in the environment turns them off too.
  bool cuda_graphs = true;
  // Set: this backend is one rank of a model sharded for tensor parallelism
  // (model::shard_model, engine/backend/cuda/tensor_parallel.h). Its output
  // and down projections give partial sums that the comm adds across the
  // ranks; rank 0 alone computes logits. The skinny GEMMs are off, and CUDA
  // graphs too unless the comm can be captured. Must outlive the backend.
  cuda::TpComm* tp_comm = nullptr;
  // Set: each successful step adds its host times here (one backend per
  // struct; it must outlive the backend).
  CudaStepTimes* step_times = nullptr;
};

// Bytes of K and V cache one token takes across all layers in bf16.
inline int64_t kv_bytes_per_token_bf16(const model::ModelConfig& c) {
  return 2LL * c.n_layers * c.kv_dim() * 2;
}

// True when this build has the CUDA backend and a CUDA device is present.
bool cuda_available();

// The model must outlive the backend (it is only read at construction: the
// weights are copied to the GPU). Fails with a clear status without a device,
// when the weights or the smallest cache do not fit, or on an unsupported
// shape (head_dim other than 16, 32, 64 or 128, more than 8 query heads per KV
// head).
absl::StatusOr<std::unique_ptr<Backend>> make_cuda_backend(const model::Model& model,
                                                           const CudaBackendOptions& options);

}  // namespace lagserve::backend
