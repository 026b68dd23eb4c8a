// The CUDA backend's class, shared by its two sources: cuda_backend.cpp
// (construction and the host side of a step: planning, metadata, graphs,
// results) and cuda_backend_stack.cpp (the decoder stack it enqueues).
// Internal: users include cuda_backend.h.
#pragma once

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/cuda_resources.h"
#include "engine/backend/cuda/device_sampler.h"
#include "engine/model/model.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/lag_work.h"
#include "kernels/cuda/paged_kv.h"

namespace lagserve::backend::cuda_impl {

namespace kc = lagserve::kernels::cuda;
using cuda::DeviceArray;
using kc::bf16;

struct LayerParams {
  DeviceArray<float> attn_norm, ffn_norm, bqkv;
  DeviceArray<bf16> wqkv, wo, w_gate_up, w_down;
};

// Where one sequence's rows and cache groups are, and what its step makes due.
struct SeqPlan {
  int32_t n = 0, row0 = 0;
  int32_t full_table = -1, lag_table = -1;  // offsets into the step's tables
  int32_t n_due = 0, region = 0;
  int32_t hide_upto = -1;                   // offset of its hide_upto array, -1: none
  int64_t selected = 0;                     // offset of its selection bytes (per layer after)
  bool rows_path = false;                   // its queries go through decode_attention, one item each
  bool gemv = false;                        // one token: its row goes through the skinny GEMMs
};

// Where a step's parts are in the metadata buffer (int32 offsets), and its
// decode split plan.
struct StackArgs {
  int64_t T = 0, n_rows = 0;
  int32_t n_decode = 0;
  int64_t n_gemv = 0;  // rows 0..n_gemv-1: one-token sequences, through the skinny GEMMs
  int64_t o_pos = 0, o_slots = 0, o_items = 0, o_rows = 0, o_head = 0, o_hide = 0, o_works = 0,
          o_tables = 0;
  bool masked_items = false;  // some decode item (a chunk row) hides unselected keys
  // LagKV work: n_lag sequences with due partitions, one LagWork each per
  // layer at o_works + (l * n_lag + j) * kWorkInts; grid maxima.
  int32_t n_lag = 0, max_due = 0, max_lag = 0, max_src = 0;
  kc::DecodePlan dplan;
};

constexpr int64_t kItemInts = sizeof(kc::DecodeItem) / sizeof(int32_t);
constexpr int64_t kWorkInts = sizeof(kc::LagWork) / sizeof(int32_t);
constexpr size_t kMaxGraphs = 64;             // captured (batch, bucket) pairs kept
// Decode graphs serve contexts up to a multiple of this (a new capture every
// kGraphBucket steps of a batch: a few ms against seconds of decoding); the
// split plan is taken for the bucket, so it stays close to the real lengths.
constexpr int32_t kGraphBucket = 512;
constexpr size_t kBlasWorkspace = 32u << 20;  // cuBLAS's, fixed so graphs can capture it

// Chunks of at most this many tokens, and every chunk of a model whose
// head_dim the tensor-core prefill kernel lacks, run as rows of the batched
// decode attention (one launch for all of them).
constexpr int32_t kRowsPathMaxTokens = 4;

// Backends of at most this many sequences use the skinny GEMMs: the
// streaming kernel up to kGemvStreamMaxSeqs, then the tensor-core one (one
// n8 tile). On the H100 (docs/cuda.md) the streaming kernel makes a step at
// batch 1 10% faster than the tensor-core one and one at batch 2 8% slower.
constexpr int32_t kGemvStreamMaxSeqs = 1;
constexpr int32_t kGemvMaxSeqs = 8;

// Which kernel takes the one-token rows' products.
enum class GemvKind { kOff, kStream, kMma };

class CudaBackend final : public Backend {
 public:
  CudaBackend(const model::Model& model, const CudaBackendOptions& opt, int32_t sm_count)
      : cfg_(model.config), opt_(opt), sm_count_(sm_count), blas_(stream_.get()) {}

  absl::Status init(const model::Model& model);
  const model::ModelConfig& config() const override { return cfg_; }
  int32_t block_size() const override { return opt_.block_size; }
  int32_t n_blocks() const override { return n_blocks_; }
  absl::StatusOr<StepOutput> step(const StepBatch& batch) override;
  bool samples_on_device() const override { return true; }

 private:
  // True when a buffer had to grow.
  bool reserve_activations(int64_t T, int64_t n_rows);
  void launch_stack(const StepBatch& batch, const std::vector<SeqPlan>& plans, const StackArgs& a);
  kc::PagedKvBf16 layer_kv(int32_t l) const {
    const int64_t per_layer = static_cast<int64_t>(n_blocks_) * cfg_.kv_dim() * opt_.block_size;
    return {k_cache_.get() + l * per_layer, v_cache_.get() + l * per_layer, cfg_.n_kv_heads,
            opt_.block_size, cfg_.head_dim};
  }

  // Where sequence p's selection flags for layer l live on the device.
  uint8_t* selection(const SeqPlan& p, int32_t l, int32_t lag) const {
    return selected_.get() + p.selected + static_cast<int64_t>(l) * cfg_.n_kv_heads * p.n_due * lag;
  }

  model::ModelConfig cfg_;
  CudaBackendOptions opt_;
  bool prefill_supported_ = false;  // the tensor-core prefill kernel has this head_dim
  int32_t sm_count_;
  int32_t n_blocks_ = 0;
  cuda::Stream stream_;
  cuda::CublasHandle blas_;
  std::vector<LayerParams> layers_;
  DeviceArray<bf16> tok_embd_, output_;  // output_ empty when tied
  DeviceArray<float> out_norm_, inv_freq_;
  DeviceArray<bf16> k_cache_, v_cache_;  // [n_layers][n_blocks, n_kv_heads, block, head_dim]
  // Activations, grown to the largest step seen.
  DeviceArray<float> x_, qkv_, gate_up_, logits_, decode_ws_, scores_;
  DeviceArray<bf16> h_, attn_, act_, compact_scratch_;
  DeviceArray<int32_t> meta_;
  DeviceArray<uint8_t> selected_;
  cuda::PinnedArray<int32_t> meta_host_;
  cuda::PinnedArray<float> logits_host_;
  cuda::PinnedArray<uint8_t> selected_host_;
  DeviceArray<uint8_t> blas_workspace_;
  cuda::DeviceSampler sampler_;  // after the stack, outside any graph
  bool use_graphs_ = true;
  // The skinny GEMMs (kernels/cuda/gemv.h) for one-token rows, with the
  // norms, RoPE and SwiGLU fused: the streaming kernel for a backend of at
  // most kGemvStreamMaxSeqs sequences, the tensor-core one up to
  // kGemvMaxSeqs, cuBLAS beyond (at batch 32 the tensor-core kernel loses
  // 18% to cuBLAS on the H100, docs/cuda.md). The choice is the backend's,
  // never the step's, so that a row takes the same path at every batch size.
  // NOTE: prefill chunks take cuBLAS, so a sequence recomputed after a
  // preemption gets its decoded tokens' K/V through the other path.
  // LAGSERVE_CUDA_GEMV=0 / stream / mma (or 1) forces it.
  GemvKind gemv_ = GemvKind::kOff;
  DeviceArray<float> gemv_ws_;
  DeviceArray<int32_t> gemv_counters_;
  kc::GemvScratch gemv_scratch() const {
    return {gemv_ws_.get(), static_cast<int64_t>(gemv_ws_.size()), gemv_counters_.get(),
            static_cast<int64_t>(gemv_counters_.size())};
  }
  std::map<std::pair<int32_t, int32_t>, std::unique_ptr<cuda::GraphExec>> graphs_;  // (batch, bucket)
};

}  // namespace lagserve::backend::cuda_impl
