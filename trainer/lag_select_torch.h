// LagKV selection (DESIGN.md section 1, "Scoring partition p" and "Selected(p)")
// as LibTorch ops on the tensors' own device: no host copy, no host synchronisation.
#pragma once

#include <torch/types.h>

#include "engine/kv/lag_policy.h"

namespace lagserve::trainer {

// Selected(p) for every scored partition p (those whose partition p+1 is
// complete within T: p < max(0, P.complete_partitions(T) - 1)), computed with
// LibTorch ops on k's device, with no host synchronisation: the LagKV scoring
// of DESIGN.md in fp32 (whatever k's dtype), then the P.keep highest scores per
// partition, ties to the lower position (stable sort), each partition's
// positions ascending. Matches engine/kv's lag_scores + lag_select except where
// two scores are within fp32 rounding of each other (a near-tie).
// k, v: [B, KVH, T, D] (D >= 2), same shape and device. Returns int64
// [B, KVH, n_scored * P.keep] absolute positions (partition 0's first); an empty
// [B, KVH, 0] tensor when no partition is scored. Precondition: P.enabled.
// Tracks no gradients.
torch::Tensor lag_selected_positions(const torch::Tensor& k, const torch::Tensor& v,
                                     const kv::LagPolicy& P);

}  // namespace lagserve::trainer
