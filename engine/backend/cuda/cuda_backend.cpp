// CudaBackend: one step = one upload of the step's metadata, the decoder
// stack as cuBLAS GEMMs and our kernels on one stream (cuda_backend_stack.cpp),
// then the logits down, or the rows sampled on the device and only their
// tokens down.
#include "engine/backend/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <utility>

#include <fmt/format.h>

#include "engine/backend/cuda/cuda_backend_impl.h"
#include "engine/backend/cuda/tp_comm.h"
#include "engine/common/check.h"
#include "kernels/cuda/kv_compact.h"

namespace lagserve::backend {
namespace cuda_impl {
namespace {

std::vector<bf16> to_bf16(const std::vector<float>& x) {
  std::vector<bf16> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = __float2bfloat16(x[i]);
  return y;
}

}  // namespace

absl::Status CudaBackend::init(const model::Model& model) {
  prefill_supported_ = cfg_.head_dim == 64 || cfg_.head_dim == 128;
  const char* env = std::getenv("LAGSERVE_CUDA_GRAPHS");
  use_graphs_ = opt_.cuda_graphs && !(env != nullptr && std::string(env) == "0");
  {
    const char* genv = std::getenv("LAGSERVE_CUDA_GEMV");
    const int64_t d = cfg_.d_model, q_dim = cfg_.q_dim(), ff = cfg_.d_ff;
    const int64_t qkv_dim = q_dim + 2 * cfg_.kv_dim();
    using E = kc::GemvEpilogue;
    // The layer's four products and the head: (N, K, epilogue).
    const std::tuple<int64_t, int64_t, E> shapes[] = {{qkv_dim, d, E::kQkvRope}, {d, q_dim, E::kAdd},
                                                      {2 * ff, d, E::kSwiglu}, {d, ff, E::kAdd},
                                                      {cfg_.vocab_size, d, E::kStore}};
    const std::string forced = genv != nullptr ? genv : "";
    if (forced == "0") {
      gemv_ = GemvKind::kOff;
    } else if (forced == "stream") {
      gemv_ = GemvKind::kStream;
    } else if (forced == "1" || forced == "mma") {
      gemv_ = GemvKind::kMma;
    } else if (!forced.empty()) {
      return absl::InvalidArgumentError("LAGSERVE_CUDA_GEMV is 0, stream, mma or 1 (mma), not '" + forced + "'");
    } else {
      gemv_ = opt_.max_seqs <= kGemvStreamMaxSeqs ? GemvKind::kStream
              : opt_.max_seqs <= kGemvMaxSeqs     ? GemvKind::kMma
                                                  : GemvKind::kOff;
    }
    for (const auto& [n, k, e] : shapes) {
      const bool ok = gemv_ == GemvKind::kStream ? kc::gemv_stream_supports(n, k, e, cfg_.head_dim)
                                                 : kc::gemv_supports(n, k, e, cfg_.head_dim);
      if (!ok) gemv_ = GemvKind::kOff;
    }
    if (gemv_ == GemvKind::kMma) {
      int64_t ws = 1, counters = 1;
      for (const auto& [n, k, e] : shapes) {
        ws = std::max(ws, kc::gemv_workspace_floats(n, k, sm_count_));
        counters = std::max(counters, kc::gemv_counters(n));
      }
      gemv_ws_.reserve(ws);
      gemv_counters_.reserve(counters);
      LAGSERVE_CUDA_CHECK(cudaMemsetAsync(gemv_counters_.get(), 0, counters * sizeof(int32_t), stream_.get()));
    }
  }
  if (opt_.tp_comm != nullptr) {
    // NOTE: the skinny GEMMs' add epilogue would need a store variant for
    // ranks > 0; tensor parallelism serves large models at batch, cuBLAS's case.
    gemv_ = GemvKind::kOff;
    use_graphs_ = use_graphs_ && opt_.tp_comm->graph_capturable();
  }
  blas_workspace_.reserve(kBlasWorkspace);
  LAGSERVE_CUBLAS_CHECK(cublasSetWorkspace(blas_.get(), blas_workspace_.get(), kBlasWorkspace));
  const auto& w = model.weights;
  tok_embd_.assign(to_bf16(w.tok_embd).data(), w.tok_embd.size());
  if (!w.output.empty()) output_.assign(to_bf16(w.output).data(), w.output.size());
  out_norm_.assign(w.out_norm.data(), w.out_norm.size());
  inv_freq_.assign(cfg_.rope_inv_freq.data(), cfg_.rope_inv_freq.size());
  layers_.resize(cfg_.n_layers);
  for (int32_t l = 0; l < cfg_.n_layers; ++l) {
    const model::LayerWeights& L = w.layers[l];
    LayerParams& P = layers_[l];
    P.attn_norm.assign(L.attn_norm.data(), L.attn_norm.size());
    P.ffn_norm.assign(L.ffn_norm.data(), L.ffn_norm.size());
    if (!L.bqkv.empty()) P.bqkv.assign(L.bqkv.data(), L.bqkv.size());
    P.wqkv.assign(to_bf16(L.wqkv).data(), L.wqkv.size());
    P.wo.assign(to_bf16(L.wo).data(), L.wo.size());
    P.w_gate_up.assign(to_bf16(L.w_gate_up).data(), L.w_gate_up.size());
    P.w_down.assign(to_bf16(L.w_down).data(), L.w_down.size());
  }
  reserve_activations(opt_.max_batched_tokens, opt_.max_seqs);

  // The cache takes what is left of the memory budget.
  const int64_t bytes_per_block = kv_bytes_per_token_bf16(cfg_) * opt_.block_size;
  int64_t cache_bytes = opt_.kv_cache_bytes;
  if (cache_bytes <= 0) {
    size_t free_b = 0, total_b = 0;
    LAGSERVE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const int64_t used = static_cast<int64_t>(total_b - free_b);
    // NOTE: headroom for cuBLAS workspaces and per-step buffers that grow.
    constexpr int64_t kHeadroom = 512LL << 20;
    cache_bytes = static_cast<int64_t>(opt_.gpu_memory_utilization * total_b) - used - kHeadroom;
  }
  const int64_t n_blocks = cache_bytes / bytes_per_block;
  if (n_blocks < 2) {
    return absl::ResourceExhaustedError(fmt::format(
        "no room for the KV cache on the GPU: {} MiB left for it, a block takes {} bytes "
        "(raise --gpu-memory-utilization or --kv-cache-mb)",
        cache_bytes >> 20, bytes_per_block));
  }
  n_blocks_ = static_cast<int32_t>(std::min<int64_t>(n_blocks, std::numeric_limits<int32_t>::max()));
  const size_t elems = static_cast<size_t>(n_blocks_) * cfg_.kv_dim() * opt_.block_size * cfg_.n_layers;
  k_cache_.reserve(elems);
  v_cache_.reserve(elems);
  if (opt_.poison_kv) {
    LAGSERVE_CUDA_CHECK(cudaMemset(k_cache_.get(), 0xFF, elems * sizeof(bf16)));
    LAGSERVE_CUDA_CHECK(cudaMemset(v_cache_.get(), 0xFF, elems * sizeof(bf16)));
    LAGSERVE_CUDA_CHECK(cudaDeviceSynchronize());  // before any launch on the non-blocking stream
  }
  return absl::OkStatus();
}

absl::StatusOr<StepOutput> CudaBackend::step(const StepBatch& batch) {
  const int32_t n_layers = cfg_.n_layers, bs = opt_.block_size, n_seqs = static_cast<int32_t>(batch.seqs.size());
  cudaStream_t st = stream_.get();
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t_start = Clock::now();

  // --- Plan the step on the host: rows, tables, due partitions. ---
  int64_t T = 0, n_rows = 0;
  std::vector<SeqPlan> plans(n_seqs);
  std::vector<int32_t> tables, hide;
  int64_t selected_bytes = 0;
  int32_t n_decode = 0, max_ctx = 1;
  int64_t total_ctx[2] = {0, 0};  // decode keys in full / compressed layers
  for (int32_t si = 0; si < n_seqs; ++si) {
    const SequenceStep& s = batch.seqs[si];
    SeqPlan& p = plans[si];
    p.n = static_cast<int32_t>(s.tokens.size());
    LAGSERVE_CHECK(p.n > 0, "a sequence step with no tokens");
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= cfg_.vocab_size) {
        return absl::InvalidArgumentError(
            fmt::format("token id {} is outside the vocabulary [0, {})", t, cfg_.vocab_size));
      }
    }
    if (s.sampling != nullptr && s.all_logits) {
      return absl::InvalidArgumentError("device sampling of a step that asks for all logits");
    }
    T += p.n;
    n_rows += s.all_logits ? p.n : 1;
    bool has_lag = false, has_full = false;
    for (int32_t l = 0; l < n_layers; ++l) (s.compressed_layer(l) ? has_lag : has_full) = true;
    if (has_full) {
      LAGSERVE_CHECK(static_cast<int64_t>(s.block_table.size()) * bs >= s.cache_len + p.n,
                     "block table cannot hold {} entries", s.cache_len + p.n);
      p.full_table = static_cast<int32_t>(tables.size());
      tables.insert(tables.end(), s.block_table.begin(), s.block_table.end());
    }
    if (has_lag) {
      LAGSERVE_CHECK(static_cast<int64_t>(s.lag_block_table.size()) * bs >= s.lag_cache_len + p.n,
                     "compressed block table cannot hold {} entries", s.lag_cache_len + p.n);
      p.lag_table = static_cast<int32_t>(tables.size());
      tables.insert(tables.end(), s.lag_block_table.begin(), s.lag_block_table.end());
      p.n_due = s.compressed_after - s.compressed_before;
      const kv::LagPolicy& P = *s.policy;
      p.region = P.sink + s.compressed_before * P.keep;
      if (p.n_due > 0) {
        p.selected = selected_bytes;
        selected_bytes += static_cast<int64_t>(n_layers) * cfg_.n_kv_heads * p.n_due * P.lag;
        if (p.n > 1) {  // queries of a chunk hide unselected keys (DESIGN.md section 1)
          p.hide_upto = static_cast<int32_t>(hide.size());
          for (int32_t i = 0; i < p.n; ++i) {
            const int32_t t = s.first_position + i;
            const int32_t upto = t < P.sink + 2 * P.lag ? -1 : P.partition_of(t) - 2 - s.compressed_before;
            hide.push_back(std::min(std::max(upto, -1), p.n_due - 1));
          }
        }
      }
    }
    p.rows_path = p.n <= kRowsPathMaxTokens || !prefill_supported_;
    p.gemv = gemv_ != GemvKind::kOff && p.n == 1;
    if (p.rows_path) {
      n_decode += p.n;
      max_ctx = std::max({max_ctx, s.cache_len + p.n, s.lag_cache_len + p.n});
      total_ctx[0] += static_cast<int64_t>(s.cache_len + p.n) * p.n;
      total_ctx[1] += static_cast<int64_t>((has_lag ? s.lag_cache_len : s.cache_len) + p.n) * p.n;
    }
  }
  // Rows: the one-token sequences first (the skinny GEMMs take rows
  // 0..n_gemv-1), then the chunks, each sequence's rows in order.
  int64_t n_gemv = 0;
  for (const SeqPlan& p : plans) n_gemv += p.gemv ? 1 : 0;
  {
    int32_t next_gemv = 0, next = static_cast<int32_t>(n_gemv);
    for (SeqPlan& p : plans) {
      p.row0 = p.gemv ? next_gemv++ : next;
      if (!p.gemv) next += p.n;
    }
  }
  bool grew_activations = reserve_activations(T, n_rows);

  // --- Metadata, one upload: tokens, positions, slots per layer, decode
  // items per layer, logits rows, hide_upto, and last the block tables (so
  // that for a batch of decode tokens every offset depends on the batch size
  // alone, which CUDA graphs need). ---
  StackArgs a;
  a.T = T;
  a.n_rows = n_rows;
  a.n_decode = n_decode;
  a.n_gemv = n_gemv;
  a.o_pos = T;
  a.o_slots = 2 * T;
  a.o_items = a.o_slots + n_layers * T;
  a.o_rows = a.o_items + static_cast<int64_t>(n_layers) * n_decode * kItemInts;
  a.o_head = a.o_rows + n_rows;  // one-token rows' logits: x rows, then logits rows
  a.o_hide = a.o_head + 2 * n_gemv;
  std::vector<int32_t> lag_seqs;  // sequences with due partitions
  int64_t score_floats = 0, scratch_elems = 0;
  std::vector<int64_t> score_at, scratch_at;
  for (int32_t si = 0; si < n_seqs; ++si) {
    const SeqPlan& p = plans[si];
    if (p.n_due == 0) continue;
    const SequenceStep& s = batch.seqs[si];
    const int32_t end = s.lag_cache_len + p.n;
    lag_seqs.push_back(si);
    score_at.push_back(score_floats);
    scratch_at.push_back(scratch_elems);
    score_floats += static_cast<int64_t>(cfg_.n_kv_heads) * p.n_due * s.policy->lag;
    scratch_elems += kc::kv_compact_scratch_elems(cfg_.n_kv_heads, cfg_.head_dim, p.region, end);
    a.max_due = std::max(a.max_due, p.n_due);
    a.max_lag = std::max(a.max_lag, s.policy->lag);
    a.max_src = std::max(a.max_src, end - p.region);
  }
  LAGSERVE_CHECK(score_floats <= std::numeric_limits<int32_t>::max() &&
                     scratch_elems <= std::numeric_limits<int32_t>::max() &&
                     selected_bytes <= std::numeric_limits<int32_t>::max(),
                 "a step's LagKV buffers exceed 2^31 elements");
  a.n_lag = static_cast<int32_t>(lag_seqs.size());
  a.o_works = a.o_hide + static_cast<int64_t>(hide.size());
  a.o_tables = a.o_works + static_cast<int64_t>(n_layers) * a.n_lag * kWorkInts;
  const int64_t meta_n = a.o_tables + static_cast<int64_t>(tables.size());
  bool grew = grew_activations | meta_host_.reserve(meta_n);
  grew |= meta_.reserve(meta_n);
  const int64_t o_tokens = 0, o_pos = a.o_pos, o_slots = a.o_slots, o_tables = a.o_tables,
                o_items = a.o_items, o_rows = a.o_rows, o_hide = a.o_hide;
  const int64_t item_ints = kItemInts;
  int32_t* M = meta_host_.get();
  std::copy(tables.begin(), tables.end(), M + o_tables);
  std::copy(hide.begin(), hide.end(), M + o_hide);
  for (int32_t j = 0; j < a.n_lag; ++j) {
    const SequenceStep& s = batch.seqs[lag_seqs[j]];
    const SeqPlan& p = plans[lag_seqs[j]];
    const kv::LagPolicy& P = *s.policy;
    for (int32_t l = 0; l < n_layers; ++l) {
      kc::LagWork w;
      w.table_offset = p.lag_table;
      w.region = p.region;
      w.n_due = s.compressed_layer(l) ? p.n_due : 0;
      w.lag = P.lag;
      w.keep = P.keep;
      w.v_weight = P.score_v_weight;
      w.end = s.lag_cache_len + p.n;
      w.score_offset = static_cast<int32_t>(score_at[j]);
      w.sel_offset = static_cast<int32_t>(p.selected + static_cast<int64_t>(l) * cfg_.n_kv_heads * p.n_due * P.lag);
      w.scratch_offset = static_cast<int32_t>(scratch_at[j]);
      std::memcpy(M + a.o_works + (static_cast<int64_t>(l) * a.n_lag + j) * kWorkInts, &w, sizeof w);
    }
  }
  {
    int64_t row = 0, head = 0;
    int32_t di = 0;
    for (int32_t si = 0; si < n_seqs; ++si) {
      const SequenceStep& s = batch.seqs[si];
      const SeqPlan& p = plans[si];
      if (p.gemv) {
        M[a.o_head + head] = p.row0;
        M[a.o_head + n_gemv + head++] = static_cast<int32_t>(row);
      }
      for (int32_t i = 0; i < p.n; ++i) {
        const int64_t r = p.row0 + i;
        M[o_tokens + r] = s.tokens[i];
        M[o_pos + r] = s.first_position + i;
        for (int32_t l = 0; l < n_layers; ++l) {
          const bool lag = s.compressed_layer(l);
          const int32_t idx = (lag ? s.lag_cache_len : s.cache_len) + i;
          const int32_t block = lag ? s.lag_block_table[idx / bs] : s.block_table[idx / bs];
          M[o_slots + l * T + r] = block * bs + idx % bs;
        }
      }
      for (int64_t i = s.all_logits ? 0 : p.n - 1; i < p.n; ++i) M[o_rows + row++] = p.row0 + static_cast<int32_t>(i);
      if (p.rows_path) {
        for (int32_t i = 0; i < p.n; ++i, ++di) {
          for (int32_t l = 0; l < n_layers; ++l) {
            const bool lag = s.compressed_layer(l);
            kc::DecodeItem it;
            it.table_offset = lag ? p.lag_table : p.full_table;
            it.ctx_len = (lag ? s.lag_cache_len : s.cache_len) + 1 + i;
            it.row = p.row0 + i;
            it.cached_len = lag ? s.lag_cache_len : s.cache_len;  // this step's rows write after it
            if (lag && p.n_due > 0 && p.hide_upto >= 0) {
              const int32_t L = s.policy->lag;
              it.mask_begin = p.region;
              it.mask_len = p.n_due * L;
              it.hide_end = p.region + (hide[p.hide_upto + i] + 1) * L;
              it.sel_offset = static_cast<int32_t>(p.selected + static_cast<int64_t>(l) * cfg_.n_kv_heads * p.n_due * L);
              a.masked_items = true;
            }
            std::memcpy(M + o_items + (static_cast<int64_t>(l) * n_decode + di) * item_ints, &it, sizeof it);
          }
        }
      }
    }
  }
  LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(meta_.get(), M, meta_n * sizeof(int32_t), cudaMemcpyHostToDevice, st));

  // A step of decode tokens alone replays a CUDA graph captured for its batch
  // size and context bucket (the decode split plan is taken for the bucket's
  // length, so that one graph serves every length up to it).
  bool trace = false;
  for (const SequenceStep& s : batch.seqs) trace = trace || (s.trace_evictions && s.compressed_after > s.compressed_before);
  const bool graph_step = use_graphs_ && n_decode == T && n_rows == T && selected_bytes == 0 && !trace;
  int32_t bucket = 0;
  if (n_decode > 0) {
    if (graph_step) {
      bucket = (max_ctx + kGraphBucket - 1) / kGraphBucket * kGraphBucket;
      a.dplan = kc::decode_attention_plan(bucket, static_cast<int64_t>(bucket) * n_decode, n_decode,
                                          cfg_.n_kv_heads, sm_count_);
    } else {
      a.dplan = kc::decode_attention_plan(max_ctx, std::max(total_ctx[0], total_ctx[1]), n_decode,
                                          cfg_.n_kv_heads, sm_count_);
    }
    grew |= decode_ws_.reserve(kc::decode_attention_workspace(a.dplan, n_decode, cfg_.n_heads, cfg_.head_dim));
  }
  // Every buffer a launch uses is sized before the first launch: a buffer
  // that grew mid-step would be freed under kernels still queued.
  grew |= selected_.reserve(std::max<int64_t>(selected_bytes, 1));
  // Every entry of a layer runs at once: the sums, not the maxima.
  grew |= scores_.reserve(std::max<int64_t>(score_floats, 1));
  grew |= compact_scratch_.reserve(std::max<int64_t>(scratch_elems, 1));
  if (grew) graphs_.clear();  // they hold the old addresses

  const Clock::time_point t_launch = Clock::now();
  if (!graph_step) {
    launch_stack(batch, plans, a);
  } else {
    const std::pair<int32_t, int32_t> key{static_cast<int32_t>(T), bucket};
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      if (graphs_.size() >= kMaxGraphs) graphs_.clear();
      cudaGraph_t graph = nullptr;
      LAGSERVE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      launch_stack(batch, plans, a);
      LAGSERVE_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
      it = graphs_.emplace(key, std::make_unique<cuda::GraphExec>(graph)).first;
      LAGSERVE_CUDA_CHECK(cudaGraphDestroy(graph));
    }
    it->second->launch(st);
  }
  StepOutput out;
  out.vocab_size = cfg_.vocab_size;
  out.row_begin.push_back(0);
  bool need_logits = false, sampling = false;
  for (const SequenceStep& s : batch.seqs) {
    out.row_begin.push_back(out.row_begin.back() + (s.all_logits ? static_cast<int32_t>(s.tokens.size()) : 1));
    need_logits = need_logits || s.need_logits;
    sampling = sampling || s.sampling != nullptr;
  }
  // The logits go down before sampling processes them in place.
  const size_t n_logits = static_cast<size_t>(n_rows) * cfg_.vocab_size;
  if (need_logits) {
    LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(logits_host_.get(), logits_.get(), n_logits * sizeof(float),
                                        cudaMemcpyDeviceToHost, st));
  }
  if (sampling) {
    std::vector<const DeviceSampling*> by_row(n_rows, nullptr);
    for (int32_t si = 0; si < n_seqs; ++si) by_row[out.row_begin[si + 1] - 1] = batch.seqs[si].sampling;
    sampler_.enqueue(by_row, logits_.get(), cfg_.vocab_size, st);
  }
  if (trace) {
    selected_host_.reserve(selected_bytes);
    LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(selected_host_.get(), selected_.get(), selected_bytes,
                                        cudaMemcpyDeviceToHost, st));
  }
  const Clock::time_point t_wait = Clock::now();
  stream_.synchronize();
  const Clock::time_point t_after = Clock::now();

  if (need_logits) out.logits.assign(logits_host_.get(), logits_host_.get() + n_logits);
  if (sampling) {
    out.tokens.assign(n_seqs, -1);
    for (int32_t si = 0; si < n_seqs; ++si) {
      if (batch.seqs[si].sampling != nullptr) out.tokens[si] = sampler_.tokens()[out.row_begin[si + 1] - 1];
    }
  }
  if (trace) {
    for (int32_t si = 0; si < n_seqs; ++si) {
      const SequenceStep& s = batch.seqs[si];
      const SeqPlan& p = plans[si];
      if (!s.trace_evictions || p.n_due == 0) continue;
      const kv::LagPolicy& P = *s.policy;
      for (int32_t l = 0; l < n_layers; ++l) {
        if (!s.compressed_layer(l)) continue;
        const uint8_t* sel = selected_host_.get() + p.selected + static_cast<int64_t>(l) * cfg_.n_kv_heads * p.n_due * P.lag;
        for (int32_t h = 0; h < cfg_.n_kv_heads; ++h) {
          for (int32_t r = 0; r < p.n_due; ++r) {
            EvictionRecord e{si, l, h, s.compressed_before + r, {}};
            for (int32_t off = 0; off < P.lag; ++off) {
              if (sel[(static_cast<int64_t>(h) * p.n_due + r) * P.lag + off] != 0) {
                e.kept_positions.push_back(P.sink + (s.compressed_before + r) * P.lag + off);
              }
            }
            out.evictions.push_back(std::move(e));
          }
        }
      }
    }
  }
  if (CudaStepTimes* t = opt_.step_times) {
    using Sec = std::chrono::duration<double>;
    t->plan_s += Sec(t_launch - t_start).count();
    t->launch_s += Sec(t_wait - t_launch).count();
    t->wait_s += Sec(t_after - t_wait).count();
    t->after_s += Sec(Clock::now() - t_after).count();
    ++t->steps;
  }
  return out;
}

}  // namespace cuda_impl

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

absl::StatusOr<std::unique_ptr<Backend>> make_cuda_backend(const model::Model& model,
                                                           const CudaBackendOptions& options) {
  int n_devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&n_devices);
  if (err != cudaSuccess || n_devices == 0) {
    return absl::UnavailableError(fmt::format("no CUDA device ({})", cudaGetErrorString(err)));
  }
  if (options.device < 0 || options.device >= n_devices) {
    return absl::InvalidArgumentError(
        fmt::format("CUDA device {} does not exist ({} present)", options.device, n_devices));
  }
  const model::ModelConfig& c = model.config;
  if (c.head_dim != 16 && c.head_dim != 32 && c.head_dim != 64 && c.head_dim != 128) {
    return absl::UnimplementedError(fmt::format(
        "the CUDA backend supports head_dim 16, 32, 64 and 128, the model has {}", c.head_dim));
  }
  if (c.n_heads % c.n_kv_heads != 0 || c.n_heads / c.n_kv_heads > 8) {
    return absl::UnimplementedError(fmt::format(
        "the CUDA backend supports 1 to 8 query heads per KV head, the model has {}/{}", c.n_heads,
        c.n_kv_heads));
  }
  if (options.block_size < 16 || options.block_size % 16 != 0) {
    return absl::InvalidArgumentError(
        fmt::format("the CUDA backend needs a block size that is a multiple of 16, got {}", options.block_size));
  }
  if (!(options.gpu_memory_utilization > 0 && options.gpu_memory_utilization <= 1)) {
    return absl::InvalidArgumentError(fmt::format(
        "gpu memory utilization must be in (0, 1], got {}", options.gpu_memory_utilization));
  }
  LAGSERVE_CUDA_CHECK(cudaSetDevice(options.device));
  int sms = 0;
  LAGSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, options.device));
  // Weights (bf16) must fit before anything else.
  size_t free_b = 0, total_b = 0;
  LAGSERVE_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  int64_t weight_bytes = static_cast<int64_t>(model.weights.tok_embd.size() + model.weights.output.size()) * 2;
  for (const auto& L : model.weights.layers) {
    weight_bytes += static_cast<int64_t>(L.wqkv.size() + L.wo.size() + L.w_gate_up.size() + L.w_down.size()) * 2;
  }
  if (weight_bytes > static_cast<int64_t>(free_b)) {
    return absl::ResourceExhaustedError(fmt::format(
        "the weights take {} MiB in bf16, the GPU has {} MiB free", weight_bytes >> 20, free_b >> 20));
  }
  auto be = std::make_unique<cuda_impl::CudaBackend>(model, options, sms);
  if (absl::Status st = be->init(model); !st.ok()) return st;
  return std::unique_ptr<Backend>(std::move(be));
}

}  // namespace lagserve::backend

