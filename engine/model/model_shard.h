// Megatron-style sharding of a model for tensor parallelism: rank r of N
// holds query heads [r, r+1) * n_heads/N, KV heads [r, r+1) * n_kv_heads/N
// (each with its query group: GQA stays within a rank, and so does the LagKV
// selection, which is per KV head), and FFN channels [r, r+1) * d_ff/N.
// Q/K/V and gate/up are split by output rows (column parallel), the output
// and down projections by input columns (row parallel): each rank's products
// are partial sums of the full ones, added by one all-reduce after each.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace lagserve::model {

// Whether N ranks can split this model: N divides n_kv_heads (and so
// n_heads) and d_ff. The message names what does not divide.
absl::Status check_tensor_parallel(const ModelConfig& config, int32_t size);

// Rank `rank` of `size`'s share: its config has n_heads/N, n_kv_heads/N and
// d_ff/N; norms, embedding and head are whole. No tokenizer.
absl::StatusOr<std::unique_ptr<Model>> shard_model(const Model& model, int32_t rank, int32_t size);

}  // namespace lagserve::model
