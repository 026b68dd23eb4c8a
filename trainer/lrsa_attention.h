// LRSA attention (DESIGN.md section 1): attention under the LagKV visibility
// function, in a block-sparse form that gathers each query partition's
// visible keys; and plain causal attention for comparison and skip_layers.
#pragma once

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include <torch/types.h>

#include "engine/kv/lag_policy.h"

namespace lagserve::trainer {

// Positions kept by each scored partition, for batch row 0:
// (layer, kv_head, partition) -> absolute positions, ascending. Same keys and
// values as the engine's eviction trace.
struct LrsaTrace {
  std::map<std::tuple<int32_t, int32_t, int32_t>, std::vector<int32_t>> kept;
};

// Selected(p) for every scored partition (those whose partition p+1 is
// complete within T), computed with engine/kv's lag_scores and lag_select on
// an fp32 host copy (no gradient flows through the selection).
// k, v: [B, KVH, T, D]. Returns, per batch row and KV head, the absolute
// positions [0, S) followed by Selected(0), Selected(1), ... (each ascending).
std::vector<std::vector<std::vector<int32_t>>> lag_prefix_lists(const torch::Tensor& k,
                                                                const torch::Tensor& v,
                                                                const kv::LagPolicy& policy);

// The block-sparse layout of the visibility function for a length T, which
// does not depend on the selection: query blocks (the sink, then one per
// partition) of `rows` queries. A block sees key slots of two kinds: a prefix
// ([0, S) and the Selected sets its partition may see, read from the prefix
// list of lag_prefix_lists) and a window (the previous partition whole and its
// own partition causally). Consecutive blocks form groups; a group pads its
// blocks' prefixes to the longest one among them (the last block's), so that
// few groups (one attention call each) waste little on padding.
struct LrsaBlockGroup {
  int64_t first_block = 0;
  int64_t n_blocks = 0;
  int64_t keys = 0;      // key slots per block: the group's prefix, then the window
  int64_t n_prefix = 0;  // prefix slots per block
  // [n_blocks * keys]: where each slot's position comes from, as an index into
  // cat(prefix list, 0 .. T-1): a prefix slot reads the list, a window slot
  // reads prefix_len + its position.
  std::vector<int64_t> key_source;
  std::vector<uint8_t> visible;  // [n_blocks, rows, keys]: 1 where the query sees the key
};
// One query block: queries [q0, q0 + n_q) see the first n_prefix entries of
// the prefix list and the positions [w_begin, their own].
struct LrsaBlock {
  int64_t q0 = 0, n_q = 0, w_begin = 0, n_prefix = 0;
};
struct LrsaLayout {
  std::vector<LrsaBlock> blocks;
  int64_t rows = 0;        // queries per block (padded)
  int64_t prefix_len = 0;  // entries of a prefix list: S + n_scored * keep
  std::vector<int64_t> query_pos;    // [blocks.size() * rows], clamped to T - 1
  std::vector<int64_t> slot_of_pos;  // [T]: the block row that holds position t
  std::vector<LrsaBlockGroup> groups;
};
// Precondition: policy enabled, T > 0, max_groups >= 1.
LrsaLayout lrsa_layout(const kv::LagPolicy& policy, int64_t T, int64_t max_groups = 8);

// The key position of slot s of block b (in group g) for one prefix list
// (host side; the attention does the same gather on the device).
int64_t lrsa_key_position(const LrsaLayout& layout, const std::vector<int32_t>& prefix_list,
                          const LrsaBlockGroup& group, int64_t block, int64_t slot);

// q: [B, H, T, D], k, v: [B, KVH, T, D] (after RoPE), H a multiple of KVH.
// Returns [B, H, T, D]. Softmax in fp32 whatever the input dtype.
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v);
// Attention under the LagKV visibility of an enabled policy for a compressed
// layer. bf16/fp16 on CUDA: variable-length flash attention, one sequence per
// query block (bottom-right causal over its prefix and window); otherwise a
// masked softmax over each block group's gathered keys. `trace`, when set,
// receives the kept positions of batch row 0 (selected on the host).
torch::Tensor lrsa_attention(const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, const kv::LagPolicy& policy,
                             int32_t layer, LrsaTrace* trace);

}  // namespace lagserve::trainer
