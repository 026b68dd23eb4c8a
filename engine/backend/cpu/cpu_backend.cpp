// CpuBackend: the decoder stack of llama/qwen2 over all tokens of a step at once.
#include "engine/backend/cpu/cpu_backend.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>

#include <fmt/format.h>

#include "engine/common/check.h"
#include "kernels/cpu/kv_compact.h"
#include "kernels/cpu/lag_score.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cpu/thread_pool.h"

namespace lagserve::backend {
namespace {

namespace k = lagserve::kernels;

// x to the nearest bf16 (ties to even), as __float2bfloat16 does; NaN and
// infinities pass.
float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
void round_bf16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = round_bf16(x[i]);
}
void round_bf16(std::vector<float>& v) { round_bf16(v.data(), static_cast<int64_t>(v.size())); }

// The model's weights with every matrix rounded to bf16 (norms and biases
// stay fp32, as on the GPU).
std::unique_ptr<model::ModelWeights> rounded_weights(const model::ModelWeights& w) {
  auto r = std::make_unique<model::ModelWeights>(w);
  round_bf16(r->tok_embd);
  round_bf16(r->output);
  for (model::LayerWeights& L : r->layers) {
    round_bf16(L.wqkv);
    round_bf16(L.wo);
    round_bf16(L.w_gate_up);
    round_bf16(L.w_down);
  }
  return r;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(const model::Model& model, const CpuBackendOptions& opt, int32_t n_blocks)
      : model_(model), cfg_(model.config), opt_(opt), n_blocks_(n_blocks), pool_(opt.n_threads) {
    if (opt.bf16_rounding) rounded_ = rounded_weights(model.weights);
    const int64_t per_layer = static_cast<int64_t>(n_blocks) * cfg_.kv_dim() * opt.block_size;
    // NOTE: new[] without () leaves pages untouched until used, so a large
    // cache costs nothing until it fills.
    k_cache_.reset(new float[per_layer * cfg_.n_layers]);
    v_cache_.reset(new float[per_layer * cfg_.n_layers]);
    if (opt.poison_kv) {
      std::fill_n(k_cache_.get(), per_layer * cfg_.n_layers, std::numeric_limits<float>::quiet_NaN());
      std::fill_n(v_cache_.get(), per_layer * cfg_.n_layers, std::numeric_limits<float>::quiet_NaN());
    }
    per_layer_floats_ = per_layer;
    k::matmul_set_threads(opt.n_threads);
  }

  const model::ModelConfig& config() const override { return cfg_; }
  int32_t block_size() const override { return opt_.block_size; }
  int32_t n_blocks() const override { return n_blocks_; }

  absl::StatusOr<StepOutput> step(const StepBatch& batch) override;

 private:
  void check_table(int32_t layer, const SequenceStep& s, bool lag, int64_t entries) const {
    LAGSERVE_CHECK(static_cast<int64_t>(lag ? s.lag_block_table.size() : s.block_table.size()) *
                           opt_.block_size >= entries,
                   "layer {}: block table cannot hold {} entries", layer, entries);
  }
  // Attention of one sequence in one layer over its cache group; with due
  // LagKV partitions, scores them, masks, and compacts afterwards.
  void attend_sequence(int32_t layer, int32_t seq_index, const SequenceStep& s, const float* qkv,
                       float* attn_out, StepOutput& out);
  k::PagedKv layer_kv(int layer) {
    return {k_cache_.get() + layer * per_layer_floats_, v_cache_.get() + layer * per_layer_floats_,
            cfg_.n_kv_heads, opt_.block_size, cfg_.head_dim};
  }

  const model::ModelWeights& weights() const { return rounded_ ? *rounded_ : model_.weights; }
  // Rounds n values to bf16 when the options ask for it.
  void maybe_round(float* x, int64_t n) const {
    if (opt_.bf16_rounding) round_bf16(x, n);
  }

  const model::Model& model_;
  std::unique_ptr<model::ModelWeights> rounded_;  // bf16_rounding: the weights, rounded
  const model::ModelConfig& cfg_;
  CpuBackendOptions opt_;
  int32_t n_blocks_;
  k::ThreadPool pool_;
  std::unique_ptr<float[]> k_cache_, v_cache_;  // [n_layers][n_blocks, n_kv_heads, block, head_dim]
  int64_t per_layer_floats_ = 0;
  // Scratch, grown to the largest step seen.
  std::vector<float> x_, h_, qkv_, attn_, gate_up_, act_, out_rows_;
  std::vector<int32_t> positions_;
  std::vector<k::AttentionItem> decode_items_;
};

// Sequences with at most this many new tokens go through the batched decode
// attention (the GEMM path takes over above, see paged_attention.cpp).
constexpr int32_t kDecodeBatchMaxTokens = 4;

absl::StatusOr<StepOutput> CpuBackend::step(const StepBatch& batch) {
  const model::ModelWeights& w = weights();
  const int64_t d = cfg_.d_model, q_dim = cfg_.q_dim(), kv_dim = cfg_.kv_dim(), ff = cfg_.d_ff;
  const int64_t qkv_dim = q_dim + 2 * kv_dim;

  // Flatten the batch: token rows of all sequences, in order.
  int64_t T = 0;
  for (const SequenceStep& s : batch.seqs) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    LAGSERVE_CHECK(n > 0, "a sequence step with no tokens");
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= cfg_.vocab_size) {
        return absl::InvalidArgumentError(
            fmt::format("token id {} is outside the vocabulary [0, {})", t, cfg_.vocab_size));
      }
    }
    T += n;
  }
  x_.resize(T * d);
  h_.resize(T * d);
  qkv_.resize(T * qkv_dim);
  attn_.resize(T * q_dim);
  gate_up_.resize(T * 2 * ff);
  act_.resize(T * ff);
  positions_.resize(T);
  {
    int64_t r = 0;
    for (const SequenceStep& s : batch.seqs) {
      for (size_t i = 0; i < s.tokens.size(); ++i, ++r) {
        std::memcpy(&x_[r * d], &w.tok_embd[static_cast<int64_t>(s.tokens[i]) * d],
                    d * sizeof(float));
        positions_[r] = s.first_position + static_cast<int32_t>(i);
      }
    }
  }
  StepOutput out;
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const model::LayerWeights& L = w.layers[l];
    // Attention block. qkv: [T, q_dim | kv_dim | kv_dim]
    k::rmsnorm(x_.data(), L.attn_norm.data(), h_.data(), T, d, cfg_.rms_eps);
    maybe_round(h_.data(), T * d);
    k::matmul_nt(h_.data(), L.wqkv.data(), qkv_.data(), T, qkv_dim, d);
    if (!L.bqkv.empty()) {
      for (int64_t r = 0; r < T; ++r) {
        for (int64_t j = 0; j < qkv_dim; ++j) qkv_[r * qkv_dim + j] += L.bqkv[j];
      }
    }
    k::rope_neox(qkv_.data(), T, qkv_dim, cfg_.n_heads, cfg_.head_dim, positions_.data(),
                 cfg_.rope_inv_freq.data());
    k::rope_neox(qkv_.data() + q_dim, T, qkv_dim, cfg_.n_kv_heads, cfg_.head_dim,
                 positions_.data(), cfg_.rope_inv_freq.data());
    if (opt_.bf16_rounding) {  // K and V as the cache will hold them; q stays fp32
      for (int64_t r = 0; r < T; ++r) round_bf16(qkv_.data() + r * qkv_dim + q_dim, 2 * kv_dim);
    }
    // Sequences with a few new tokens and nothing to compact (decode) share
    // one parallel attention loop; the others run one by one.
    const k::PagedKv kv = layer_kv(l);
    decode_items_.clear();
    int64_t r = 0;
    for (size_t si = 0; si < batch.seqs.size(); ++si) {
      const SequenceStep& s = batch.seqs[si];
      const int32_t n = static_cast<int32_t>(s.tokens.size());
      const bool lag = s.compressed_layer(l);
      float* row = qkv_.data() + r * qkv_dim;
      if (n <= kDecodeBatchMaxTokens && (!lag || s.compressed_after == s.compressed_before)) {
        const int32_t* table = lag ? s.lag_block_table.data() : s.block_table.data();
        const int32_t cache_len = lag ? s.lag_cache_len : s.cache_len;
        check_table(l, s, lag, cache_len + n);
        k::paged_kv_write(kv, table, cache_len, n, row + q_dim, row + q_dim + kv_dim, qkv_dim);
        decode_items_.push_back({table, cache_len + 1, row, attn_.data() + r * q_dim, n, nullptr});
      } else {
        attend_sequence(l, static_cast<int32_t>(si), s, row, attn_.data() + r * q_dim, out);
      }
      r += n;
    }
    k::paged_attention_batch(kv, decode_items_.data(), static_cast<int32_t>(decode_items_.size()),
                             qkv_dim, cfg_.n_heads,
                             1.0f / std::sqrt(static_cast<float>(cfg_.head_dim)), &pool_);
    maybe_round(attn_.data(), T * q_dim);
    k::matmul_nt(attn_.data(), L.wo.data(), x_.data(), T, d, q_dim, /*accumulate=*/true);
    // MLP block.
    k::rmsnorm(x_.data(), L.ffn_norm.data(), h_.data(), T, d, cfg_.rms_eps);
    maybe_round(h_.data(), T * d);
    k::matmul_nt(h_.data(), L.w_gate_up.data(), gate_up_.data(), T, 2 * ff, d);
    k::swiglu(gate_up_.data(), act_.data(), T, ff);
    maybe_round(act_.data(), T * ff);
    k::matmul_nt(act_.data(), L.w_down.data(), x_.data(), T, d, ff, /*accumulate=*/true);
  }

  // Final norm and head over the rows whose logits were asked for.
  out.vocab_size = cfg_.vocab_size;
  out.row_begin.push_back(0);
  int64_t n_rows = 0;
  {
    int64_t r = 0;
    for (const SequenceStep& s : batch.seqs) {
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      const int64_t first = s.all_logits ? r : r + n - 1;
      for (int64_t i = first; i < r + n; ++i, ++n_rows) {
        std::memcpy(&h_[n_rows * d], &x_[i * d], d * sizeof(float));  // n_rows <= i: safe
      }
      out.row_begin.push_back(static_cast<int32_t>(n_rows));
      r += n;
    }
  }
  k::rmsnorm(h_.data(), w.out_norm.data(), h_.data(), n_rows, d, cfg_.rms_eps);
  maybe_round(h_.data(), n_rows * d);
  out.logits.resize(n_rows * cfg_.vocab_size);
  k::matmul_nt(h_.data(), w.output_head().data(), out.logits.data(), n_rows, cfg_.vocab_size, d);
  return out;
}

void CpuBackend::attend_sequence(int32_t layer, int32_t seq_index, const SequenceStep& s,
                                 const float* qkv, float* attn_out, StepOutput& out) {
  const int64_t q_dim = cfg_.q_dim(), kv_dim = cfg_.kv_dim(), qkv_dim = q_dim + 2 * kv_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
  const int32_t n = static_cast<int32_t>(s.tokens.size());
  const k::PagedKv kv = layer_kv(layer);
  const bool lag = s.compressed_layer(layer);
  const int32_t* table = lag ? s.lag_block_table.data() : s.block_table.data();
  const int32_t cache_len = lag ? s.lag_cache_len : s.cache_len;
  check_table(layer, s, lag, cache_len + n);
  k::paged_kv_write(kv, table, cache_len, n, qkv + q_dim, qkv + q_dim + kv_dim, qkv_dim);
  const int32_t n_due = lag ? s.compressed_after - s.compressed_before : 0;
  if (n_due <= 0) {
    k::paged_attention(kv, table, cache_len + 1, qkv, qkv_dim, attn_out, n, cfg_.n_heads, scale,
                       &pool_);
    return;
  }
  // Score and select the due partitions, per KV head (DESIGN.md section 1).
  const kv::LagPolicy& P = *s.policy;
  const int32_t S = P.sink, L = P.lag, K = P.keep, before = s.compressed_before;
  const int32_t region = S + before * K;  // cache index of partition `before`
  std::vector<uint8_t> selected(static_cast<size_t>(cfg_.n_kv_heads) * n_due * L, 0);
  std::vector<std::vector<int32_t>> own(static_cast<size_t>(cfg_.n_kv_heads) * n_due);
  std::vector<std::vector<int32_t>> kept(own.size());
  std::vector<float> scores(L);
  for (int32_t h = 0; h < cfg_.n_kv_heads; ++h) {
    for (int32_t r = 0; r < n_due; ++r) {
      const int32_t cur = region + r * L;
      const size_t i = static_cast<size_t>(h) * n_due + r;
      k::lag_score_paged(kv, table, h, cur, cur + L, L, P.score_v_weight, scores.data());
      own[i] = kv::lag_select(scores, K);
      const std::vector<int32_t>* follow =
          opt_.follow_selections ? opt_.follow_selections(layer, h, before + r) : nullptr;
      if (follow == nullptr) {
        kept[i] = own[i];
      } else {
        LAGSERVE_CHECK(static_cast<int32_t>(follow->size()) == K, "layer {} head {} partition {}: "
                       "{} positions to follow, the policy keeps {}", layer, h, before + r, follow->size(), K);
        for (int32_t pos : *follow) {
          const int32_t off = pos - (S + (before + r) * L);
          LAGSERVE_CHECK(off >= 0 && off < L && (kept[i].empty() || off > kept[i].back()),
                         "layer {} head {} partition {}: position {} to follow is not in the partition "
                         "in ascending order", layer, h, before + r, pos);
          kept[i].push_back(off);
        }
      }
      for (int32_t off : kept[i]) selected[i * L + off] = 1;
    }
  }
  // Query i hides the unselected keys of partitions up to c(t) - 2.
  std::vector<int32_t> hide_upto(n);
  for (int32_t i = 0; i < n; ++i) {
    const int32_t t = s.first_position + i;
    const int32_t upto = t < S + 2 * L ? -1 : P.partition_of(t) - 2 - before;
    hide_upto[i] = std::min(std::max(upto, -1), n_due - 1);
  }
  const k::PartitionMask mask{region, n_due, L, selected.data(), hide_upto.data()};
  k::paged_attention(kv, table, cache_len + 1, qkv, qkv_dim, attn_out, n, cfg_.n_heads, scale,
                     &pool_, &mask);
  // Compact: the selected entries of each due partition, then everything after
  // the due region, move forward to `region`.
  const int32_t end = cache_len + n;
  std::vector<int32_t> src;
  for (int32_t h = 0; h < cfg_.n_kv_heads; ++h) {
    src.clear();
    for (int32_t r = 0; r < n_due; ++r) {
      for (int32_t off : kept[static_cast<size_t>(h) * n_due + r]) src.push_back(region + r * L + off);
    }
    for (int32_t j = region + n_due * L; j < end; ++j) src.push_back(j);
    k::kv_compact(kv, table, h, src.data(), static_cast<int32_t>(src.size()), region);
  }
  if (s.trace_evictions) {
    for (int32_t h = 0; h < cfg_.n_kv_heads; ++h) {
      for (int32_t r = 0; r < n_due; ++r) {
        EvictionRecord e{seq_index, layer, h, before + r, {}};
        for (int32_t off : own[static_cast<size_t>(h) * n_due + r]) {
          e.kept_positions.push_back(S + (before + r) * L + off);
        }
        out.evictions.push_back(std::move(e));
      }
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> make_cpu_backend(const model::Model& model,
                                                          const CpuBackendOptions& options) {
  if (options.n_threads < 1) {
    return absl::InvalidArgumentError(fmt::format("threads must be >= 1, got {}", options.n_threads));
  }
  if (options.block_size < 1) {
    return absl::InvalidArgumentError(fmt::format("block size must be >= 1, got {}", options.block_size));
  }
  const int64_t bytes_per_block = kv_bytes_per_token(model.config) * options.block_size;
  const int64_t n_blocks = options.kv_cache_bytes / bytes_per_block;
  if (n_blocks < 2) {
    return absl::InvalidArgumentError(fmt::format(
        "a KV cache of {} bytes holds {} blocks of {} bytes; at least 2 are needed",
        options.kv_cache_bytes, n_blocks, bytes_per_block));
  }
  if (n_blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError("KV cache too large");
  }
  return std::unique_ptr<Backend>(
      new CpuBackend(model, options, static_cast<int32_t>(n_blocks)));
}

}  // namespace lagserve::backend
