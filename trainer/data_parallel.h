// Data-parallel training under a torchrun-style environment (RANK,
// WORLD_SIZE, MASTER_ADDR, MASTER_PORT): one process per replica, LibTorch's
// c10d process group sums the gradients after each step's micro-batches:
// NCCL when the model is on a GPU and LibTorch has it, else Gloo. Without the
// variables, or at WORLD_SIZE=1, a group of one that does nothing.
#pragma once

#include <memory>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lagserve::trainer {

class DataParallel {
 public:
  // From the environment, for a model on `device`. Errors (InvalidArgument):
  // a variable that is not a number, RANK outside [0, WORLD_SIZE),
  // WORLD_SIZE > 1 without MASTER_ADDR/MASTER_PORT or with no process group
  // for the device (no Gloo; on CUDA, no Gloo and no NCCL); Unavailable: the
  // group could not be formed (a peer never came: c10d's timeout).
  static absl::StatusOr<std::unique_ptr<DataParallel>> from_env(const torch::Device& device);
  ~DataParallel();

  int rank() const { return rank_; }
  int world() const { return world_; }
  bool uses_nccl() const;

  // Sums t over the replicas, in place: every replica ends with the sum.
  // Errors (Unavailable): a peer gone, or silent past the timeout (30 min:
  // rank 0 evaluates and checkpoints while the others wait).
  absl::Status all_reduce_sum(torch::Tensor& t);
  // Sums the gradients of params over the replicas (one flat buffer).
  absl::Status all_reduce_grads(const std::vector<torch::Tensor>& params);

 private:
  struct Group;
  DataParallel(int rank, int world, std::unique_ptr<Group> group);
  int rank_ = 0, world_ = 1;
  std::unique_ptr<Group> group_;  // null for a world of one
};

}  // namespace lagserve::trainer
