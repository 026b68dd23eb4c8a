// LRSA attention: the LagKV selection from engine/kv, the block-sparse layout
// of the visibility function, and masked attention over gathered keys.
#include "trainer/lrsa_attention.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>
#include <torch/version.h>

#include "engine/common/check.h"

namespace lagserve::trainer {

namespace {

int64_t div_ceil(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Scaled dot-product attention over batched blocks: q [N, M, Lq, D], k and v
// [N, M, Nk, D], visible [M, Lq, Nk] or [Lq, Nk] (bool, broadcast). Softmax in
// fp32.
torch::Tensor masked_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& visible) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    return at::scaled_dot_product_attention(q, k, v, visible);
  }
#endif
  // Half-precision inputs are scored in fp32; fp32 and double as they are.
  const auto acc = q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto scores = torch::matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale;
  scores = scores.masked_fill(visible.logical_not(), -std::numeric_limits<float>::infinity());
  auto probs = torch::softmax(scores, -1);
  return torch::matmul(probs.to(v.scalar_type()), v);
}

}  // namespace

std::vector<std::vector<std::vector<int32_t>>> lag_prefix_lists(const torch::Tensor& k,
                                                                const torch::Tensor& v,
                                                                const kv::LagPolicy& P) {
  torch::NoGradGuard no_grad;
  // [B, KVH, T, D] fp32 on the host: a partition of one head is L rows of D.
  const auto kh = k.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const auto vh = v.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t B = kh.size(0), KVH = kh.size(1), T = kh.size(2), D = kh.size(3);
  const float* kp = kh.data_ptr<float>();
  const float* vp = vh.data_ptr<float>();
  const int64_t n_scored = std::max<int64_t>(0, P.complete_partitions(static_cast<int32_t>(T)) - 1);
  std::vector<std::vector<std::vector<int32_t>>> lists(B, std::vector<std::vector<int32_t>>(KVH));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < KVH; ++h) {
      auto& list = lists[b][h];
      for (int32_t j = 0; j < std::min<int64_t>(P.sink, T); ++j) list.push_back(j);
      const int64_t base = (b * KVH + h) * T * D;
      for (int64_t p = 0; p < n_scored; ++p) {
        const int64_t cur = P.partition_begin(static_cast<int32_t>(p)), ref = cur + P.lag;
        const auto scores = kv::lag_scores(kp + base + cur * D, kp + base + ref * D,
                                           vp + base + cur * D, vp + base + ref * D, P.lag,
                                           static_cast<int32_t>(D), D, P.score_v_weight);
        for (int32_t off : kv::lag_select(scores, P.keep)) {
          list.push_back(static_cast<int32_t>(cur) + off);
        }
      }
    }
  }
  return lists;
}

LrsaBlocks lrsa_blocks(const kv::LagPolicy& P, int64_t T,
                       const std::vector<std::vector<std::vector<int32_t>>>& lists) {
  LAGSERVE_CHECK(P.enabled && T > 0, "lrsa_blocks needs an enabled policy and T > 0");
  const int64_t S = std::min<int64_t>(P.sink, T), L = P.lag, k = P.keep;
  const int64_t n_parts = T > S ? div_ceil(T - S, L) : 0;
  const bool sink_block = S > 0;
  LrsaBlocks out;
  out.n_blocks = (sink_block ? 1 : 0) + n_parts;
  out.rows = std::max(S, L);
  const int64_t n_prefix_max = S + std::max<int64_t>(0, n_parts - 2) * k;
  const int64_t window = std::max(S, 2 * L);
  out.keys = n_prefix_max + window;

  // Per block: first query, query count, window [w_begin, w_end), prefix count.
  struct Block { int64_t q0, n_q, w_begin, w_end, n_prefix; };
  std::vector<Block> blocks;
  if (sink_block) blocks.push_back({0, S, 0, S, 0});
  for (int64_t c = 0; c < n_parts; ++c) {
    const int64_t q0 = S + c * L, n_q = std::min(L, T - q0);
    blocks.push_back({q0, n_q, S + std::max<int64_t>(0, c - 1) * L, q0 + n_q,
                      S + std::max<int64_t>(0, c - 1) * k});
  }

  const int64_t R = out.rows, K = out.keys;
  out.query_pos.assign(out.n_blocks * R, T - 1);
  out.slot_of_pos.assign(T, 0);
  out.visible.assign(out.n_blocks * R * K, 0);
  for (int64_t b = 0; b < out.n_blocks; ++b) {
    const Block& blk = blocks[b];
    for (int64_t i = 0; i < R; ++i) {
      uint8_t* vis = &out.visible[(b * R + i) * K];
      if (i >= blk.n_q) {
        vis[n_prefix_max] = 1;  // a padding row: any valid key keeps its softmax finite
        continue;
      }
      const int64_t t = blk.q0 + i;
      out.query_pos[b * R + i] = t;
      out.slot_of_pos[t] = b * R + i;
      for (int64_t j = 0; j < blk.n_prefix; ++j) vis[j] = 1;
      for (int64_t j = blk.w_begin; j <= t; ++j) vis[n_prefix_max + (j - blk.w_begin)] = 1;
    }
  }
  const int64_t B = static_cast<int64_t>(lists.size());
  const int64_t KVH = B > 0 ? static_cast<int64_t>(lists[0].size()) : 0;
  out.key_pos.assign(B * KVH * out.n_blocks * K, 0);
  for (int64_t bh = 0; bh < B * KVH; ++bh) {
    const auto& list = lists[bh / KVH][bh % KVH];
    for (int64_t b = 0; b < out.n_blocks; ++b) {
      int64_t* pos = &out.key_pos[(bh * out.n_blocks + b) * K];
      const Block& blk = blocks[b];
      LAGSERVE_CHECK(static_cast<int64_t>(list.size()) >= blk.n_prefix,
                     "prefix list holds {} positions, block needs {}", list.size(), blk.n_prefix);
      for (int64_t j = 0; j < blk.n_prefix; ++j) pos[j] = list[j];
      for (int64_t j = 0; j < window; ++j) pos[n_prefix_max + j] = std::min(blk.w_begin + j, T - 1);
    }
  }
  return out;
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), KVH = k.size(1);
  const int64_t G = H / KVH;
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    return at::scaled_dot_product_attention(q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1),
                                            {}, 0.0, /*is_causal=*/true);
  }
#endif
  // Query heads of one KV head as rows of one matrix: [B, KVH, G*T, D].
  const auto qg = q.reshape({B, KVH, G * T, D});
  auto causal = torch::ones({T, T}, torch::dtype(torch::kBool).device(q.device())).tril();
  causal = causal.unsqueeze(0).expand({G, T, T}).reshape({G * T, T});
  return masked_attention(qg, k, v, causal).reshape({B, H, T, D});
}

torch::Tensor lrsa_attention(const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, const kv::LagPolicy& P, int32_t layer,
                             LrsaTrace* trace) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), KVH = k.size(1);
  const int64_t G = H / KVH;
  const auto lists = lag_prefix_lists(k, v, P);
  if (trace != nullptr) {
    const int32_t S = std::min<int32_t>(P.sink, static_cast<int32_t>(T));
    for (int64_t h = 0; h < KVH; ++h) {
      const auto& list = lists[0][h];
      for (size_t i = S, p = 0; i < list.size(); i += P.keep, ++p) {
        trace->kept[{layer, static_cast<int32_t>(h), static_cast<int32_t>(p)}] =
            std::vector<int32_t>(list.begin() + i, list.begin() + i + P.keep);
      }
    }
  }
  const LrsaBlocks blk = lrsa_blocks(P, T, lists);
  const int64_t M = blk.n_blocks, R = blk.rows, K = blk.keys;
  // Owning copies on the device: autograd keeps the index tensors for the
  // backward pass, after `blk` is gone.
  const auto device_copy = [&](const auto& values, std::vector<int64_t> shape, torch::Dtype dtype) {
    return torch::from_blob(const_cast<void*>(static_cast<const void*>(values.data())), shape, dtype)
        .to(q.device(), /*non_blocking=*/false, /*copy=*/true);
  };
  const auto query_pos = device_copy(blk.query_pos, {M * R}, torch::kLong);
  const auto slot_of_pos = device_copy(blk.slot_of_pos, {T}, torch::kLong);
  const auto key_pos = device_copy(blk.key_pos, {B, KVH, M * K, 1}, torch::kLong).expand({B, KVH, M * K, D});
  // [M, R, K] -> [M, G*R, K]: each query head of a group repeats the block's rows.
  const auto visible = device_copy(blk.visible, {M, 1, R, K}, torch::kUInt8)
                           .to(torch::kBool)
                           .expand({M, G, R, K})
                           .reshape({M, G * R, K});

  // q blocks: [B, H, M*R, D] -> [B, KVH, G, M, R, D] -> [B*KVH, M, G*R, D].
  const auto qb = q.index_select(2, query_pos)
                      .view({B, KVH, G, M, R, D})
                      .permute({0, 1, 3, 2, 4, 5})
                      .reshape({B * KVH, M, G * R, D});
  const auto kb = k.gather(2, key_pos).view({B * KVH, M, K, D});
  const auto vb = v.gather(2, key_pos).view({B * KVH, M, K, D});
  const auto ob = masked_attention(qb, kb, vb, visible);  // [B*KVH, M, G*R, D]
  return ob.view({B, KVH, M, G, R, D})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({B, H, M * R, D})
      .index_select(2, slot_of_pos);
}

}  // namespace lagserve::trainer
