// paged_attention: two paths with one result. Few queries (decode): per
// (query, head), scores block by block, softmax, weighted sum of V, split over
// (query, head) pairs. Many queries (prefill): per KV head, gather K and V into
// contiguous rows and use two GEMMs per query head and tile.
#include "kernels/cpu/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/cpu/vec_math.h"

namespace lagserve::kernels {

void paged_kv_write(const PagedKv& kv, const int32_t* block_table, int32_t first_index,
                    int32_t n_new, const float* k_src, const float* v_src,
                    int64_t src_row_stride) {
  const size_t bytes = static_cast<size_t>(kv.head_dim) * sizeof(float);
  for (int32_t i = 0; i < n_new; ++i) {
    const int32_t index = first_index + i;
    const int32_t block = block_table[index / kv.block_size];
    const int32_t slot = index % kv.block_size;
    for (int32_t h = 0; h < kv.n_kv_heads; ++h) {
      const int64_t off = kv.slot_offset(block, h, slot);
      const int64_t src = i * src_row_stride + static_cast<int64_t>(h) * kv.head_dim;
      std::memcpy(kv.k_pool + off, k_src + src, bytes);
      std::memcpy(kv.v_pool + off, v_src + src, bytes);
    }
  }
}

namespace {

// One query token and one KV head: the `group` query heads that share the KV
// head are done together, so K and V are read once. Scratch: scores
// [group, ctx], inv [group].
// Hidden keys (mask) get a score of -inf; exp_vec turns that into ~1e-38, not
// 0, which is far below what fp32 sums resolve.
void mask_scores(const PartitionMask& mask, int32_t query, int32_t kv_head, float* scores,
                 int32_t ctx) {
  const int32_t end = std::min(ctx, mask.begin + mask.n_partitions * mask.lag);
  for (int32_t j = std::max(0, mask.begin); j < end; ++j) {
    if (mask.hidden(query, kv_head, j)) scores[j] = -INFINITY;
  }
}

void attend_group(const PagedKv& kv, const int32_t* block_table, int32_t ctx, const float* q,
                  int32_t group, int32_t kv_head, float scale, const PartitionMask* mask,
                  int32_t query, float* scores, float* inv, float* o) {
  const int32_t D = kv.head_dim, B = kv.block_size;
  for (int32_t start = 0; start < ctx; start += B) {
    const int32_t n = std::min(B, ctx - start);
    const float* k = kv.k_pool + kv.slot_offset(block_table[start / B], kv_head, 0);
    for (int32_t s = 0; s < n; ++s) {
      for (int32_t g = 0; g < group; ++g) {
        scores[g * ctx + start + s] = dot_vec(q + g * D, k + s * D, D) * scale;
      }
    }
  }
  for (int32_t g = 0; g < group; ++g) {
    float* sg = scores + g * ctx;
    if (mask) mask_scores(*mask, query, kv_head, sg, ctx);
    inv[g] = 1.0f / exp_shift_sum(sg, ctx, max_vec(sg, ctx));
  }
  std::fill(o, o + group * D, 0.f);
  for (int32_t start = 0; start < ctx; start += B) {
    const int32_t n = std::min(B, ctx - start);
    const float* v = kv.v_pool + kv.slot_offset(block_table[start / B], kv_head, 0);
    for (int32_t s = 0; s < n; ++s) {
      for (int32_t g = 0; g < group; ++g) {
        const float p = scores[g * ctx + start + s];
        float* og = o + g * D;
        for (int32_t d = 0; d < D; ++d) og[d] += p * v[s * D + d];
      }
    }
  }
  for (int32_t g = 0; g < group; ++g) {
    for (int32_t d = 0; d < D; ++d) o[g * D + d] *= inv[g];
  }
}

// Queries per GEMM tile in the prefill path; bounds the score matrix.
constexpr int32_t kQueryTile = 256;
// From this many queries on, the GEMM path is faster.
constexpr int32_t kGemmMinQueries = 8;

// Softmax of row i over its first valid(i) entries; the rest become 0.
void causal_softmax_rows(float* s, int64_t ld, int32_t n_rows, int32_t first_valid,
                         ThreadPool* pool) {
  auto rows = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* r = s + i * ld;
      const int64_t valid = first_valid + i;
      const float inv = 1.0f / exp_shift_sum(r, valid, max_vec(r, valid));
      for (int64_t j = 0; j < valid; ++j) r[j] *= inv;
      std::fill(r + valid, r + ld, 0.f);
    }
  };
  if (pool) {
    pool->parallel_for(n_rows, rows);
  } else {
    rows(0, n_rows);
  }
}

void paged_attention_gemm(const PagedKv& kv, const int32_t* block_table, int32_t ctx_first,
                          const float* q, int64_t q_row_stride, float* out, int32_t n_q,
                          int32_t n_heads, float scale, ThreadPool* pool,
                          const PartitionMask* mask) {
  const int32_t D = kv.head_dim, B = kv.block_size;
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t ctx_all = ctx_first + n_q - 1;  // entries the last query sees
  std::vector<float> k(static_cast<size_t>(ctx_all) * D), v(k.size());
  std::vector<float> scores(static_cast<size_t>(std::min(n_q, kQueryTile)) * ctx_all);
  for (int32_t kvh = 0; kvh < kv.n_kv_heads; ++kvh) {
    for (int32_t start = 0; start < ctx_all; start += B) {  // gather [ctx_all, D]
      const int32_t n = std::min(B, ctx_all - start);
      const int64_t off = kv.slot_offset(block_table[start / B], kvh, 0);
      std::memcpy(&k[static_cast<size_t>(start) * D], kv.k_pool + off, sizeof(float) * n * D);
      std::memcpy(&v[static_cast<size_t>(start) * D], kv.v_pool + off, sizeof(float) * n * D);
    }
    for (int32_t h = kvh * group; h < (kvh + 1) * group; ++h) {
      for (int32_t t0 = 0; t0 < n_q; t0 += kQueryTile) {
        const int32_t nt = std::min(kQueryTile, n_q - t0);
        const int32_t ctx = ctx_first + t0 + nt - 1;  // columns this tile needs
        // scores[i, j] = q_i . k_j, [nt, ctx] with row stride ctx.
        matmul_nt_strided(q + t0 * q_row_stride + h * D, q_row_stride, k.data(), D,
                          scores.data(), ctx, nt, ctx, D, scale);
        if (mask) {
          for (int32_t i = 0; i < nt; ++i) {
            mask_scores(*mask, t0 + i, kvh, scores.data() + static_cast<int64_t>(i) * ctx,
                        ctx_first + t0 + i);
          }
        }
        causal_softmax_rows(scores.data(), ctx, nt, ctx_first + t0, pool);
        // out_i = sum_j p_ij v_j
        matmul_nn_strided(scores.data(), ctx, v.data(), D,
                          out + (static_cast<int64_t>(t0) * n_heads + h) * D,
                          static_cast<int64_t>(n_heads) * D, nt, D, ctx);
      }
    }
  }
}

}  // namespace

void paged_attention(const PagedKv& kv, const int32_t* block_table, int32_t ctx_first,
                     const float* q, int64_t q_row_stride, float* out, int32_t n_q,
                     int32_t n_heads, float scale, ThreadPool* pool, const PartitionMask* mask) {
  if (n_q >= kGemmMinQueries) {
    paged_attention_gemm(kv, block_table, ctx_first, q, q_row_stride, out, n_q, n_heads, scale,
                         pool, mask);
    return;
  }
  const AttentionItem item{block_table, ctx_first, q, out, n_q, mask};
  paged_attention_batch(kv, &item, 1, q_row_stride, n_heads, scale, pool);
}

void paged_attention_batch(const PagedKv& kv, const AttentionItem* items, int32_t n_items,
                           int64_t q_row_stride, int32_t n_heads, float scale, ThreadPool* pool) {
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t D = kv.head_dim;
  // Jobs: (item, query, kv head), numbered item by item.
  std::vector<int64_t> first_job(n_items + 1, 0);
  int32_t max_ctx = 0;
  for (int32_t it = 0; it < n_items; ++it) {
    first_job[it + 1] = first_job[it] + static_cast<int64_t>(items[it].n_q) * kv.n_kv_heads;
    max_ctx = std::max(max_ctx, items[it].ctx_first + items[it].n_q);
  }
  auto run = [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(max_ctx) * group), inv(group);
    int32_t it = static_cast<int32_t>(
        std::upper_bound(first_job.begin(), first_job.end(), begin) - first_job.begin() - 1);
    for (int64_t job = begin; job < end; ++job) {
      while (job >= first_job[it + 1]) ++it;
      const AttentionItem& item = items[it];
      const int64_t local = job - first_job[it];
      const int32_t i = static_cast<int32_t>(local / kv.n_kv_heads);
      const int32_t kvh = static_cast<int32_t>(local % kv.n_kv_heads);
      attend_group(kv, item.block_table, item.ctx_first + i,
                   item.q + i * q_row_stride + kvh * group * D, group, kvh, scale, item.mask, i,
                   scores.data(), inv.data(),
                   item.out + (static_cast<int64_t>(i) * n_heads + kvh * group) * D);
    }
  };
  if (pool) {
    pool->parallel_for(first_job[n_items], run);
  } else {
    run(0, first_job[n_items]);
  }
}

void paged_attention_reference(const PagedKv& kv, const int32_t* block_table, int32_t ctx_first,
                               const float* q, int64_t q_row_stride, float* out, int32_t n_q,
                               int32_t n_heads, float scale, const PartitionMask* mask) {
  const int32_t group = n_heads / kv.n_kv_heads;
  const int32_t D = kv.head_dim;
  for (int32_t i = 0; i < n_q; ++i) {
    const int32_t ctx = ctx_first + i;
    for (int32_t h = 0; h < n_heads; ++h) {
      const float* qh = q + i * q_row_stride + h * D;
      std::vector<double> s(ctx);
      double mx = -INFINITY;
      for (int32_t j = 0; j < ctx; ++j) {  // token by token through the block table
        const float* k = kv.k_pool + kv.slot_offset(block_table[j / kv.block_size], h / group,
                                                    j % kv.block_size);
        double dot = 0;
        for (int32_t d = 0; d < D; ++d) dot += static_cast<double>(qh[d]) * k[d];
        s[j] = mask && mask->hidden(i, h / group, j) ? -INFINITY : dot * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int32_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int32_t j = 0; j < ctx; ++j) {
          const float* v = kv.v_pool + kv.slot_offset(block_table[j / kv.block_size], h / group,
                                                      j % kv.block_size);
          acc += s[j] * v[d];
        }
        out[(static_cast<int64_t>(i) * n_heads + h) * D + d] = static_cast<float>(acc / sum);
      }
    }
  }
}

}  // namespace lagserve::kernels
