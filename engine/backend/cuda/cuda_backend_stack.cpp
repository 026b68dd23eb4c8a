// The decoder stack of one planned step, enqueued on the backend's stream,
// and the activation buffers it runs on.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/backend/cuda/cuda_backend_impl.h"
#include "engine/backend/cuda/tp_comm.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kv_compact.h"
#include "kernels/cuda/lag_score.h"
#include "kernels/cuda/lag_select.h"
#include "kernels/cuda/prefill_attention.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/swiglu.h"

namespace lagserve::backend::cuda_impl {

bool CudaBackend::reserve_activations(int64_t T, int64_t n_rows) {
  const int64_t d = cfg_.d_model, qkv_dim = cfg_.q_dim() + 2 * cfg_.kv_dim(), ff = cfg_.d_ff;
  bool grew = x_.reserve(T * d);
  grew |= h_.reserve(std::max(T, n_rows) * d);
  grew |= qkv_.reserve(T * qkv_dim);
  grew |= attn_.reserve(T * cfg_.q_dim());
  grew |= gate_up_.reserve(T * 2 * ff);
  grew |= act_.reserve(T * ff);
  grew |= logits_.reserve(n_rows * cfg_.vocab_size);
  grew |= logits_host_.reserve(n_rows * cfg_.vocab_size);
  return grew;
}

// Enqueues the decoder stack of a planned step on the stream, through the
// logits (captured whole into a graph for decode steps).
void CudaBackend::launch_stack(const StepBatch& batch, const std::vector<SeqPlan>& plans,
                               const StackArgs& a) {
  const int64_t d = cfg_.d_model, q_dim = cfg_.q_dim(), kv_dim = cfg_.kv_dim(), ff = cfg_.d_ff;
  const int64_t qkv_dim = q_dim + 2 * kv_dim, item_ints = kItemInts;
  const int32_t n_layers = cfg_.n_layers, n_seqs = static_cast<int32_t>(batch.seqs.size());
  const int64_t T = a.T, n_rows = a.n_rows, o_tokens = 0, o_pos = a.o_pos, o_slots = a.o_slots,
                o_items = a.o_items, o_rows = a.o_rows, o_hide = a.o_hide;
  const int32_t n_decode = a.n_decode;
  const kc::DecodePlan& dplan = a.dplan;
  cudaStream_t st = stream_.get();
  const int32_t* dmeta = meta_.get();
  const int32_t* dtables = dmeta + a.o_tables;
  const float scale = 1.0f / std::sqrt(static_cast<float>(cfg_.head_dim));
  // Rows 0..G-1 (one token each) take the skinny GEMMs with their neighbours
  // fused; rows G..T-1 (chunks) take RMSNorm, cuBLAS, RoPE and SwiGLU apart.
  const int64_t G = a.n_gemv, C = T - G;
  const kc::GemvScratch scratch = gemv_scratch();
  auto gemv = [&](const bf16* w, int64_t N, int64_t K, const kc::GemvInput& in, const kc::GemvOutput& out,
                  int64_t rows) {
    if (gemv_ == GemvKind::kStream) {
      kc::gemv_stream_bf16(w, N, K, in, out, rows, sm_count_, st);
    } else {
      kc::gemv_bf16(w, N, K, in, out, rows, scratch, sm_count_, st);
    }
  };
  auto normed = [&](const float* weight) {
    kc::GemvInput in;
    in.x_norm = x_.get();
    in.norm_weight = weight;
    in.eps = cfg_.rms_eps;
    return in;
  };
  auto add_to_x = [&] {
    kc::GemvOutput out;
    out.epilogue = kc::GemvEpilogue::kAdd;
    out.y = x_.get();
    out.y_ld = d;
    return out;
  };
  // Tensor parallelism (no skinny GEMMs: G = 0): a rank's output and down
  // projections are partial sums. Rank 0 adds its own to the residual stream,
  // the others overwrite theirs, and the all-reduce leaves x + the sum on
  // every rank.
  cuda::TpComm* tp = opt_.tp_comm;
  const bool add_residual = tp == nullptr || tp->rank() == 0;
  kc::embedding(tok_embd_.get(), dmeta + o_tokens, x_.get(), T, d, st);
  for (int32_t l = 0; l < n_layers; ++l) {
    const LayerParams& P = layers_[l];
    const kc::PagedKvBf16 kv = layer_kv(l);
    const float* bqkv = P.bqkv.size() > 0 ? P.bqkv.get() : nullptr;
    if (G > 0) {
      kc::GemvOutput out;
      out.epilogue = kc::GemvEpilogue::kQkvRope;
      out.y = qkv_.get();
      out.bias = bqkv;
      out.positions = dmeta + o_pos;
      out.inv_freq = inv_freq_.get();
      out.slots = dmeta + o_slots + l * T;
      out.kv = kv;
      out.n_heads = cfg_.n_heads;
      gemv(P.wqkv.get(), qkv_dim, d, normed(P.attn_norm.get()), out, G);
    }
    if (C > 0) {
      kc::rmsnorm(x_.get() + G * d, nullptr, P.attn_norm.get(), h_.get(), C, d, cfg_.rms_eps, st);
      kc::gemm_bf16_nt(blas_.get(), h_.get(), P.wqkv.get(), qkv_.get() + G * qkv_dim, C, qkv_dim, d, false);
      kc::qkv_rope_write(qkv_.get() + G * qkv_dim, bqkv, dmeta + o_pos + G, inv_freq_.get(),
                         dmeta + o_slots + l * T + G, kv, C, cfg_.n_heads, st);
    }
    // 1. Score and select the partitions this step makes due (every KV head,
    // every sequence in one launch each): chunk queries need the selection
    // for their mask.
    bool lag_layer = false;
    for (int32_t si = 0; si < n_seqs && a.n_lag > 0; ++si) {
      lag_layer = lag_layer || (plans[si].n_due > 0 && batch.seqs[si].compressed_layer(l));
    }
    const auto* works = reinterpret_cast<const kc::LagWork*>(
        dmeta + a.o_works + static_cast<int64_t>(l) * a.n_lag * kWorkInts);
    if (lag_layer) {
      kc::lag_score(kv, dtables, works, a.n_lag, a.max_due, a.max_lag, scores_.get(), st);
      kc::lag_select(scores_.get(), works, a.n_lag, cfg_.n_kv_heads, a.max_due, a.max_lag,
                     selected_.get(), st);
    }
    // 2. Decode tokens and short chunks: one launch for all their rows.
    if (n_decode > 0) {
      const auto* items = reinterpret_cast<const kc::DecodeItem*>(
          dmeta + o_items + static_cast<int64_t>(l) * n_decode * item_ints);
      kc::decode_attention(kv, dtables, items, n_decode, dplan, qkv_.get(), qkv_dim, attn_.get(),
                           q_dim, cfg_.n_heads, scale, a.masked_items ? selected_.get() : nullptr,
                           decode_ws_.get(), st);
    }
    // 3. Longer chunks: the tensor-core prefill kernel, one launch per sequence.
    for (int32_t si = 0; si < n_seqs; ++si) {
      const SequenceStep& s = batch.seqs[si];
      const SeqPlan& p = plans[si];
      if (p.rows_path) continue;
      const bool lag = s.compressed_layer(l);
      const int32_t due = lag ? p.n_due : 0;
      kc::PartitionMaskGpu mask;
      if (due > 0) {
        mask.begin = p.region;
        mask.n_partitions = due;
        mask.lag = s.policy->lag;
        mask.selected = selection(p, l, s.policy->lag);
        mask.hide_upto = dmeta + o_hide + p.hide_upto;
      }
      kc::prefill_attention(kv, dtables + (lag ? p.lag_table : p.full_table),
                            (lag ? s.lag_cache_len : s.cache_len) + 1,
                            qkv_.get() + static_cast<int64_t>(p.row0) * qkv_dim, qkv_dim,
                            attn_.get() + static_cast<int64_t>(p.row0) * q_dim, p.n, cfg_.n_heads,
                            scale, due > 0 ? &mask : nullptr, st);
    }
    // 4. After attention, compaction: the selected entries and the tail move forward.
    if (lag_layer) {
      kc::kv_compact(kv, dtables, works, a.n_lag, a.max_src, selected_.get(), compact_scratch_.get(), st);
    }
    if (G > 0) {
      kc::GemvInput in;
      in.x = attn_.get();
      gemv(P.wo.get(), d, q_dim, in, add_to_x(), G);
      kc::GemvOutput out;
      out.epilogue = kc::GemvEpilogue::kSwiglu;
      out.act = act_.get();
      gemv(P.w_gate_up.get(), 2 * ff, d, normed(P.ffn_norm.get()), out, G);
      kc::GemvInput act;
      act.x = act_.get();
      gemv(P.w_down.get(), d, ff, act, add_to_x(), G);
    }
    if (C > 0) {
      kc::gemm_bf16_nt(blas_.get(), attn_.get() + G * q_dim, P.wo.get(), x_.get() + G * d, C, d, q_dim,
                       add_residual);
      if (tp != nullptr) tp->all_reduce_sum(x_.get(), T * d, st);
      kc::rmsnorm(x_.get() + G * d, nullptr, P.ffn_norm.get(), h_.get(), C, d, cfg_.rms_eps, st);
      kc::gemm_bf16_nt(blas_.get(), h_.get(), P.w_gate_up.get(), gate_up_.get(), C, 2 * ff, d, false);
      kc::swiglu(gate_up_.get(), act_.get() + G * ff, C, ff, st);
      kc::gemm_bf16_nt(blas_.get(), act_.get() + G * ff, P.w_down.get(), x_.get() + G * d, C, d, ff,
                       add_residual);
      if (tp != nullptr) tp->all_reduce_sum(x_.get(), T * d, st);
    }
  }
  // Final norm over the rows whose logits were asked for, then the head; the
  // one-token rows' logits come from the skinny GEMM (over the cuBLAS ones).
  if (!add_residual) return;  // logits are rank 0's
  const bf16* head = output_.size() > 0 ? output_.get() : tok_embd_.get();
  if (n_rows > G) {
    kc::rmsnorm(x_.get(), dmeta + o_rows, out_norm_.get(), h_.get(), n_rows, d, cfg_.rms_eps, st);
    kc::gemm_bf16_nt(blas_.get(), h_.get(), head, logits_.get(), n_rows, cfg_.vocab_size, d, false);
  }
  if (G > 0) {
    kc::GemvInput in = normed(out_norm_.get());
    in.rows = dmeta + a.o_head;
    kc::GemvOutput out;
    out.y = logits_.get();
    out.y_ld = cfg_.vocab_size;
    out.rows = dmeta + a.o_head + G;
    gemv(head, cfg_.vocab_size, d, in, out, G);
  }
}

}  // namespace lagserve::backend::cuda_impl
