// LRSA attention: the LagKV selection from engine/kv, the block-sparse layout
// of the visibility function, and masked attention over gathered keys.
#include "trainer/lrsa_attention.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <string>

#include <torch/torch.h>
#include <torch/version.h>

#include <fmt/format.h>

#include "engine/common/check.h"
#include "trainer/lag_select_torch.h"

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

LrsaLayout lrsa_layout(const kv::LagPolicy& P, int64_t T, int64_t max_groups) {
  LAGSERVE_CHECK(P.enabled && T > 0 && max_groups >= 1, "lrsa_layout: bad arguments (T {})", T);
  const int64_t S = std::min<int64_t>(P.sink, T), L = P.lag, k = P.keep;
  const int64_t n_parts = T > S ? div_ceil(T - S, L) : 0;
  const int64_t n_scored = std::max<int64_t>(0, P.complete_partitions(static_cast<int32_t>(T)) - 1);
  LrsaLayout out;
  out.rows = std::max(S, L);
  out.prefix_len = S + n_scored * k;
  const int64_t window = std::max(S, 2 * L);

  auto& blocks = out.blocks;
  if (S > 0) blocks.push_back({0, S, 0, 0});
  for (int64_t c = 0; c < n_parts; ++c) {
    const int64_t q0 = S + c * L;
    blocks.push_back({q0, std::min(L, T - q0), S + std::max<int64_t>(0, c - 1) * L,
                      S + std::max<int64_t>(0, c - 1) * k});
  }

  const int64_t R = out.rows;
  const auto n_blocks = static_cast<int64_t>(blocks.size());
  out.query_pos.assign(n_blocks * R, T - 1);
  out.slot_of_pos.assign(T, 0);
  const int64_t per_group = div_ceil(n_blocks, std::min(n_blocks, max_groups));
  for (int64_t first = 0; first < n_blocks; first += per_group) {
    LrsaBlockGroup g;
    g.first_block = first;
    g.n_blocks = std::min(per_group, n_blocks - first);
    g.n_prefix = blocks[first + g.n_blocks - 1].n_prefix;  // prefixes only grow
    g.keys = g.n_prefix + window;
    const int64_t K = g.keys;
    g.key_source.assign(g.n_blocks * K, 0);
    g.visible.assign(g.n_blocks * R * K, 0);
    for (int64_t gb = 0; gb < g.n_blocks; ++gb) {
      const LrsaBlock& blk = blocks[first + gb];
      for (int64_t j = 0; j < g.n_prefix; ++j) {
        g.key_source[gb * K + j] = std::min(j, std::max<int64_t>(0, out.prefix_len - 1));
      }
      for (int64_t j = 0; j < window; ++j) {
        g.key_source[gb * K + g.n_prefix + j] = out.prefix_len + std::min(blk.w_begin + j, T - 1);
      }
      for (int64_t i = 0; i < R; ++i) {
        uint8_t* vis = &g.visible[(gb * R + i) * K];
        if (i >= blk.n_q) {
          vis[g.n_prefix] = 1;  // a padding row: any valid key keeps its softmax finite
          continue;
        }
        const int64_t t = blk.q0 + i, b = first + gb;
        out.query_pos[b * R + i] = t;
        out.slot_of_pos[t] = b * R + i;
        for (int64_t j = 0; j < blk.n_prefix; ++j) vis[j] = 1;
        for (int64_t j = blk.w_begin; j <= t; ++j) vis[g.n_prefix + (j - blk.w_begin)] = 1;
      }
    }
    out.groups.push_back(std::move(g));
  }
  return out;
}

int64_t lrsa_key_position(const LrsaLayout& layout, const std::vector<int32_t>& prefix_list,
                          const LrsaBlockGroup& group, int64_t block, int64_t slot) {
  LAGSERVE_CHECK(static_cast<int64_t>(prefix_list.size()) == layout.prefix_len,
                 "prefix list of {} entries, layout expects {}", prefix_list.size(), layout.prefix_len);
  const int64_t src = group.key_source[(block - group.first_block) * group.keys + slot];
  return src < layout.prefix_len ? prefix_list[src] : src - layout.prefix_len;
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

namespace {

// An owning copy of host values on the device (autograd keeps index tensors
// for the backward pass, after the host vectors are gone).
template <typename V>
torch::Tensor device_copy(const V& values, std::vector<int64_t> shape, torch::Dtype dtype,
                          torch::Device device) {
  return torch::from_blob(const_cast<void*>(static_cast<const void*>(values.data())), shape, dtype)
      .to(device, /*non_blocking=*/false, /*copy=*/true);
}

// Layouts depend only on (policy, lengths, device): built once per key and
// reused by every layer and step. Lengths vary rarely; at most 16 are kept.
template <typename Build>
auto cached(const std::string& key, Build build) -> decltype(build()) {
  using Layout = decltype(build());
  static std::mutex mutex;
  static std::map<std::string, Layout> cache;
  std::lock_guard lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (cache.size() >= 16) cache.clear();
  return cache.emplace(key, build()).first->second;
}

// The layout's tensors on one device, for one group size G.
struct DeviceLayout {
  struct Group {
    int64_t first_block, n_blocks, keys;
    torch::Tensor key_source;  // [n_blocks * keys] int64
    torch::Tensor visible;     // [n_blocks, G*R, keys] bool: each query head of a group repeats the rows
  };
  int64_t n_blocks, rows, prefix_len;
  torch::Tensor query_pos;    // [M*R] int64
  torch::Tensor slot_of_pos;  // [T] int64
  std::vector<Group> groups;
};

DeviceLayout device_layout(const kv::LagPolicy& P, int64_t T, int64_t G, torch::Device device) {
  return cached(fmt::format("{}|{}|{}|{}", P.to_string(), T, G, device.str()), [&] {
  // More groups cut padded work but cost kernel launches: one per 4K tokens.
    const LrsaLayout l = lrsa_layout(P, T, std::clamp<int64_t>(T / 4096, 1, 8));
    const auto M = static_cast<int64_t>(l.blocks.size()), R = l.rows;
    DeviceLayout d{M, R, l.prefix_len, device_copy(l.query_pos, {M * R}, torch::kLong, device),
                   device_copy(l.slot_of_pos, {T}, torch::kLong, device), {}};
    for (const LrsaBlockGroup& g : l.groups) {
      const int64_t n = g.n_blocks, K = g.keys;
      d.groups.push_back({g.first_block, n, K, device_copy(g.key_source, {n * K}, torch::kLong, device),
                          device_copy(g.visible, {n, 1, R, K}, torch::kUInt8, device)
                              .to(torch::kBool)
                              .expand({n, G, R, K})
                              .reshape({n, G * R, K})});
    }
    return d;
  });
}

// [B, KVH, S + n_scored * keep] int64 on k's device: [0, S) then Selected(0), ...
torch::Tensor prefix_positions(const torch::Tensor& k, const torch::Tensor& v, const kv::LagPolicy& P,
                               int32_t layer, LrsaTrace* trace) {
  const int64_t B = k.size(0), KVH = k.size(1), T = k.size(2);
  const int64_t S = std::min<int64_t>(P.sink, T);
  torch::Tensor prefix;
  if (k.is_cuda() && trace == nullptr) {
    // NOTE: on the GPU the selection runs as torch ops (no host round trip);
    // tests/trainer/lag_select_torch_test.cpp holds it to engine/kv's reference.
    const auto sink = torch::arange(S, torch::dtype(torch::kLong).device(k.device()));
    prefix = torch::cat({sink.expand({B, KVH, S}), lag_selected_positions(k, v, P)}, -1);
  } else {
    const auto lists = lag_prefix_lists(k, v, P);
    const int64_t n = static_cast<int64_t>(lists[0][0].size());
    auto host = torch::empty({B, KVH, n}, torch::kLong);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < KVH; ++h) {
        std::copy(lists[b][h].begin(), lists[b][h].end(), host.data_ptr<int64_t>() + (b * KVH + h) * n);
      }
    }
    if (trace != nullptr) {
      for (int64_t h = 0; h < KVH; ++h) {
        const auto& list = lists[0][h];
        for (int64_t i = S, p = 0; i < n; i += P.keep, ++p) {
          trace->kept[{layer, static_cast<int32_t>(h), static_cast<int32_t>(p)}] =
              std::vector<int32_t>(list.begin() + i, list.begin() + i + P.keep);
        }
      }
    }
    prefix = host.to(k.device());
  }
  return prefix;
}

#if TORCH_VERSION_MAJOR >= 2
// Variable-length flash attention with the causal mask aligned bottom-right
// (flash-attn's convention when a sequence has more keys than queries): a
// block's queries see every prefix key and the window up to themselves, which
// is exactly the visibility function, with no mask and no padding. The op has
// no autograd formula of its own; its backward is the flash backward.
struct FlashVarlen : public torch::autograd::Function<FlashVarlen> {
  // q: [total_q, H, D], k, v: [total_k, KVH, D]; cu_q, cu_k: int32 [n_seqs + 1].
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                               torch::Tensor k, torch::Tensor v, torch::Tensor cu_q,
                               torch::Tensor cu_k, int64_t max_q, int64_t max_k) {
    auto [out, lse, rng_state, unused, debug] = at::_flash_attention_forward(
        q, k, v, cu_q, cu_k, max_q, max_k, 0.0, /*is_causal=*/true, /*return_debug_mask=*/false);
    ctx->save_for_backward({q, k, v, out, lse, cu_q, cu_k, rng_state, unused});
    ctx->saved_data["max_q"] = max_q;
    ctx->saved_data["max_k"] = max_k;
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto s = ctx->get_saved_variables();
    auto [dq, dk, dv] = at::_flash_attention_backward(
        grad[0].contiguous(), s[0], s[1], s[2], s[3], s[4], s[5], s[6],
        ctx->saved_data["max_q"].toInt(), ctx->saved_data["max_k"].toInt(), 0.0,
        /*is_causal=*/true, s[7], s[8]);
    return {dq, dk, dv, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// The varlen form of a layout on one device: each (batch row, block) is one
// sequence of its queries and its keys (prefix, then window).
struct VarlenLayout {
  int64_t keys = 0;         // keys of one batch row, all blocks together
  torch::Tensor key_source;  // [keys] int64: index into cat(prefix list, 0 .. T-1)
  torch::Tensor cu_q, cu_k;  // int32 [B * n_blocks + 1]
  int64_t max_q = 0, max_k = 0;
};

VarlenLayout varlen_layout(const kv::LagPolicy& P, int64_t B, int64_t T, torch::Device device) {
  return cached(fmt::format("{}|{}|{}|{}", P.to_string(), B, T, device.str()), [&] {
    const LrsaLayout l = lrsa_layout(P, T, 1);
    VarlenLayout v;
    std::vector<int64_t> source;
    std::vector<int32_t> n_keys;  // per block: its prefix, then its window
    for (const LrsaBlock& b : l.blocks) {
      const int64_t n_window = b.q0 + b.n_q - b.w_begin;
      for (int64_t j = 0; j < b.n_prefix; ++j) source.push_back(j);
      for (int64_t j = 0; j < n_window; ++j) source.push_back(l.prefix_len + b.w_begin + j);
      n_keys.push_back(static_cast<int32_t>(b.n_prefix + n_window));
      v.max_q = std::max(v.max_q, b.n_q);
      v.max_k = std::max<int64_t>(v.max_k, n_keys.back());
    }
    v.keys = static_cast<int64_t>(source.size());
    std::vector<int32_t> cu_q{0}, cu_k{0};
    for (int64_t r = 0; r < B; ++r) {
      for (size_t i = 0; i < l.blocks.size(); ++i) {
        cu_q.push_back(cu_q.back() + static_cast<int32_t>(l.blocks[i].n_q));
        cu_k.push_back(cu_k.back() + n_keys[i]);
      }
    }
    const auto n = [](const auto& values) { return static_cast<int64_t>(values.size()); };
    v.key_source = device_copy(source, {n(source)}, torch::kLong, device);
    v.cu_q = device_copy(cu_q, {n(cu_q)}, torch::kInt, device);
    v.cu_k = device_copy(cu_k, {n(cu_k)}, torch::kInt, device);
    return v;
  });
}

torch::Tensor lrsa_attention_flash(const torch::Tensor& q, const torch::Tensor& k,
                                   const torch::Tensor& v, const kv::LagPolicy& P,
                                   const torch::Tensor& prefix) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), KVH = k.size(1);
  const VarlenLayout l = varlen_layout(P, B, T, q.device());
  const auto sources = torch::cat({prefix, torch::arange(T, prefix.options()).expand({B, KVH, T})}, -1);
  const auto key_pos = sources.gather(-1, l.key_source.expand({B, KVH, l.keys}))
                           .unsqueeze(-1)
                           .expand({B, KVH, l.keys, D});
  // [B, KVH, keys, D] -> [B * keys, KVH, D]
  const auto pack = [&](const torch::Tensor& x) {
    return x.gather(2, key_pos).transpose(1, 2).reshape({B * l.keys, KVH, D});
  };
  const auto qp = q.transpose(1, 2).reshape({B * T, H, D});  // blocks are in position order
  const auto out = FlashVarlen::apply(qp, pack(k), pack(v), l.cu_q, l.cu_k, l.max_q, l.max_k);
  return out.view({B, T, H, D}).transpose(1, 2);
}
#endif

}  // namespace

torch::Tensor lrsa_attention(const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, const kv::LagPolicy& P, int32_t layer,
                             LrsaTrace* trace) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), KVH = k.size(1);
  const int64_t G = H / KVH;
#if TORCH_VERSION_MAJOR >= 2
  // bf16/fp16 on CUDA: the flash kernel (varlen, no mask); fp32 (the tests'
  // exact comparisons) takes the masked path below.
  if (q.is_cuda() && q.scalar_type() != torch::kFloat && q.scalar_type() != torch::kDouble) {
    return lrsa_attention_flash(q, k, v, P, prefix_positions(k, v, P, layer, trace));
  }
#endif
  const DeviceLayout l = device_layout(P, T, G, q.device());
  const int64_t M = l.n_blocks, R = l.rows;
  const auto prefix = prefix_positions(k, v, P, layer, trace);
  LAGSERVE_CHECK(prefix.size(2) == l.prefix_len, "prefix of {} positions, layout expects {}",
                 prefix.size(2), l.prefix_len);
  // Every position a key slot can read: the prefix list, then 0 .. T-1.
  const auto sources = torch::cat({prefix, torch::arange(T, prefix.options()).expand({B, KVH, T})}, -1);

  // q blocks: [B, H, M*R, D] -> [B, KVH, G, M, R, D] -> [B*KVH, M, G*R, D].
  const auto qb = q.index_select(2, l.query_pos)
                      .view({B, KVH, G, M, R, D})
                      .permute({0, 1, 3, 2, 4, 5})
                      .reshape({B * KVH, M, G * R, D});
  std::vector<torch::Tensor> outs;
  for (const auto& g : l.groups) {
    const int64_t n = g.n_blocks, K = g.keys;
    const auto key_pos = sources.gather(-1, g.key_source.expand({B, KVH, n * K}))
                             .unsqueeze(-1)
                             .expand({B, KVH, n * K, D});
    const auto kb = k.gather(2, key_pos).view({B * KVH, n, K, D});
    const auto vb = v.gather(2, key_pos).view({B * KVH, n, K, D});
    outs.push_back(masked_attention(qb.narrow(1, g.first_block, n), kb, vb, g.visible));
  }
  const auto ob = outs.size() == 1 ? outs[0] : torch::cat(outs, 1);  // [B*KVH, M, G*R, D]
  return ob.view({B, KVH, M, G, R, D})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({B, H, M * R, D})
      .index_select(2, l.slot_of_pos);
}

}  // namespace lagserve::trainer
