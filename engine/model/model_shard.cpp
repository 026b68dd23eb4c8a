#include "engine/model/model_shard.h"

#include <fmt/format.h>

namespace lagserve::model {
namespace {

// Rows [begin, begin + n) of a row-major [rows, cols] matrix, appended to out.
void append_rows(const std::vector<float>& m, int64_t cols, int64_t begin, int64_t n, std::vector<float>& out) {
  out.insert(out.end(), m.begin() + begin * cols, m.begin() + (begin + n) * cols);
}

// Columns [begin, begin + n) of a row-major [rows, cols] matrix.
std::vector<float> columns(const std::vector<float>& m, int64_t cols, int64_t begin, int64_t n) {
  const int64_t rows = static_cast<int64_t>(m.size()) / cols;
  std::vector<float> out;
  out.reserve(rows * n);
  for (int64_t r = 0; r < rows; ++r) {
    out.insert(out.end(), m.begin() + r * cols + begin, m.begin() + r * cols + begin + n);
  }
  return out;
}

}  // namespace

absl::Status check_tensor_parallel(const ModelConfig& c, int32_t size) {
  if (size < 1) return absl::InvalidArgumentError(fmt::format("tensor parallel size {}: must be at least 1", size));
  if (c.n_heads % size != 0) {
    return absl::InvalidArgumentError(fmt::format(
        "tensor parallel size {} does not divide the model's {} query heads", size, c.n_heads));
  }
  if (c.n_kv_heads % size != 0 && size % c.n_kv_heads != 0) {
    return absl::InvalidArgumentError(fmt::format(
        "tensor parallel size {} neither divides the model's {} KV heads nor is a multiple of them; "
        "each rank holds whole KV heads", size, c.n_kv_heads));
  }
  if (c.d_ff % size != 0) {
    return absl::InvalidArgumentError(
        fmt::format("tensor parallel size {} does not divide the model's FFN width {}", size, c.d_ff));
  }
  return absl::OkStatus();
}

KvHeadShare kv_heads_of_rank(const ModelConfig& c, int32_t rank, int32_t size) {
  KvHeadShare share;
  if (c.n_kv_heads % size == 0) {
    share.count = c.n_kv_heads / size;
    share.first = rank * share.count;
  } else {
    const int32_t replicas = size / c.n_kv_heads;
    share.count = 1;
    share.first = rank / replicas;
    share.primary = rank % replicas == 0;
  }
  return share;
}

absl::StatusOr<std::unique_ptr<Model>> shard_model(const Model& model, int32_t rank, int32_t size) {
  const ModelConfig& c = model.config;
  if (absl::Status st = check_tensor_parallel(c, size); !st.ok()) return st;
  if (rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(fmt::format("rank {} of tensor parallel size {}", rank, size));
  }
  auto out = std::make_unique<Model>();
  out->source = model.source;
  out->chat_template = model.chat_template;
  ModelConfig& s = out->config;
  s = c;
  s.n_heads = c.n_heads / size;
  const KvHeadShare share = kv_heads_of_rank(c, rank, size);
  s.n_kv_heads = share.count;
  s.d_ff = c.d_ff / size;
  const int64_t d = c.d_model;
  const int64_t q = c.q_dim(), kv = c.kv_dim(), ff = c.d_ff;
  const int64_t q_s = s.q_dim(), kv_s = s.kv_dim(), ff_s = s.d_ff;
  const int64_t q0 = rank * q_s, kv0 = share.first * c.head_dim, ff0 = rank * ff_s;

  const ModelWeights& w = model.weights;
  ModelWeights& o = out->weights;
  o.tok_embd = w.tok_embd;
  o.out_norm = w.out_norm;
  o.output = w.output;
  o.layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& L = w.layers[l];
    LayerWeights& S = o.layers[l];
    S.attn_norm = L.attn_norm;
    S.ffn_norm = L.ffn_norm;
    S.wqkv.reserve((q_s + 2 * kv_s) * d);
    append_rows(L.wqkv, d, q0, q_s, S.wqkv);
    append_rows(L.wqkv, d, q + kv0, kv_s, S.wqkv);
    append_rows(L.wqkv, d, q + kv + kv0, kv_s, S.wqkv);
    if (!L.bqkv.empty()) {
      append_rows(L.bqkv, 1, q0, q_s, S.bqkv);
      append_rows(L.bqkv, 1, q + kv0, kv_s, S.bqkv);
      append_rows(L.bqkv, 1, q + kv + kv0, kv_s, S.bqkv);
    }
    S.wo = columns(L.wo, q, q0, q_s);
    S.w_gate_up.reserve(2 * ff_s * d);
    append_rows(L.w_gate_up, d, ff0, ff_s, S.w_gate_up);
    append_rows(L.w_gate_up, d, ff + ff0, ff_s, S.w_gate_up);
    S.w_down = columns(L.w_down, ff, ff0, ff_s);
  }
  return out;
}

}  // namespace lagserve::model
