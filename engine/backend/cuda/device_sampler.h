// The CUDA backend's sampling of logits rows on the device
// (SequenceStep::sampling): the rows' inputs go up in one copy, then
// kernels::cuda::sampling_sample runs (or sampling_argmax when every row is
// plain greedy), and only the tokens come down.
#pragma once

#include <cstdint>
#include <span>

#include <cuda_runtime.h>

#include "engine/backend/backend.h"
#include "engine/backend/cuda/cuda_resources.h"

namespace lagserve::backend::cuda {

class DeviceSampler {
 public:
  // Enqueues on `stream` the sampling of logits [by_row.size(), vocab] (device
  // memory, processed in place): row r with by_row[r]; a null entry is a row
  // nobody samples (taken greedily, its token unused). tokens() holds the
  // result once the stream has synchronized.
  void enqueue(std::span<const DeviceSampling* const> by_row, float* logits, int32_t vocab,
               cudaStream_t stream);
  const int32_t* tokens() const { return tokens_host_.get(); }

 private:
  DeviceArray<unsigned char> inputs_;  // the rows' parameters and token lists
  PinnedArray<unsigned char> inputs_host_;
  DeviceArray<unsigned long long> argmax_keys_;
  DeviceArray<int32_t> tokens_;
  PinnedArray<int32_t> tokens_host_;
};

}  // namespace lagserve::backend::cuda
