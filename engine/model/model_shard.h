// Megatron-style sharding of a model for tensor parallelism: rank r of N
// holds query heads [r, r+1) * n_heads/N, KV heads [r, r+1) * n_kv_heads/N
// (each with its query group: GQA stays within a rank, and so does the LagKV
// selection, which is per KV head), and FFN channels [r, r+1) * d_ff/N.
// With more ranks than KV heads (N a multiple of n_kv_heads), each KV head is
// replicated on N / n_kv_heads consecutive ranks, which split its query
// group: every replica computes the same keys and values from the same
// all-reduced input, and so makes the same LagKV selection.
// Q/K/V and gate/up are split by output rows (column parallel), the output
// and down projections by input columns (row parallel): each rank's products
// are partial sums of the full ones, added by one all-reduce after each.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "engine/model/model.h"

namespace lagserve::model {

// Whether N ranks can split this model: N divides n_heads and d_ff, and N
// divides n_kv_heads or is a multiple of it. The message names what does not
// fit.
absl::Status check_tensor_parallel(const ModelConfig& config, int32_t size);

// The whole model's KV heads that rank `rank` of `size` holds: [first, first
// + count). primary: no lower rank holds them (replicas report once).
struct KvHeadShare {
  int32_t first = 0, count = 0;
  bool primary = true;
};
KvHeadShare kv_heads_of_rank(const ModelConfig& config, int32_t rank, int32_t size);

// Rank `rank` of `size`'s share: its config has n_heads/N, the KV heads of
// kv_heads_of_rank and d_ff/N; norms, embedding and head are whole. No
// tokenizer.
absl::StatusOr<std::unique_ptr<Model>> shard_model(const Model& model, int32_t rank, int32_t size);

}  // namespace lagserve::model
