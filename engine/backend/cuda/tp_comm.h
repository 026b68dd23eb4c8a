// The collective that tensor-parallel serving needs: an in-place fp32 sum
// across the ranks, enqueued on each rank's stream (Megatron-style layers:
// one all-reduce after the attention output projection and one after the MLP
// down projection). NCCL does it across GPUs; a stand-in does it for several
// ranks on one GPU, so that sharding is tested where only one GPU is lent.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <cuda_runtime.h>

#include "absl/status/statusor.h"

namespace lagserve::backend::cuda {

class TpComm {
 public:
  virtual ~TpComm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // buf[i] = the sum over the ranks of their buf[i], i < n; every rank calls
  // it with the same n, in the same order, from its own thread. Every rank
  // ends with the same bits.
  virtual void all_reduce_sum(float* buf, int64_t n, cudaStream_t stream) = 0;
  // Whether all_reduce_sum may be captured into a CUDA graph.
  virtual bool graph_capturable() const = 0;
};

// True when this build links NCCL.
bool nccl_available();

// One NCCL communicator per device (ncclCommInitAll), rank r on devices[r].
absl::StatusOr<std::vector<std::unique_ptr<TpComm>>> make_nccl_comms(const std::vector<int>& devices);

// n ranks on the current device: each rank's all_reduce_sum waits (on the
// host) for the others, then sums their buffers in rank order. Not capturable.
// For tests: NCCL refuses two ranks on one GPU.
std::vector<std::unique_ptr<TpComm>> make_single_device_comms(int n);

}  // namespace lagserve::backend::cuda
