// Training checkpoints: weights, optimizer state and the loop's position, in
// one folder written atomically (a temporary folder, then a rename).
#pragma once

#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include "absl/status/statusor.h"

namespace lagserve::trainer {

struct LoopState {
  int64_t step = 0;           // optimizer steps done
  uint64_t data_position = 0;  // sequences consumed (SequenceOrder position)
  std::string fingerprint;    // the options that must not change on resume
};

absl::Status save_checkpoint(const std::string& dir, torch::nn::Module& model,
                             torch::optim::AdamW& optimizer, const LoopState& state);
// Loads into an already built model and optimizer (same shapes). NotFound when
// dir holds no checkpoint; InvalidArgument when it is unreadable.
absl::StatusOr<LoopState> load_checkpoint(const std::string& dir, torch::nn::Module& model,
                                          torch::optim::AdamW& optimizer);

}  // namespace lagserve::trainer
