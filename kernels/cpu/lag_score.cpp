// lag_score_paged: LagKV scoring of one partition of one KV head over the
// paged cache, in vectorisable fp32 loops; and its plain double reference.
#include "kernels/cpu/lag_score.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/vec_math.h"

namespace lagserve::kernels {
namespace {

const float* row_at(const float* pool, const PagedKv& kv, const int32_t* block_table,
                    int32_t kv_head, int32_t index) {
  return pool + kv.slot_offset(block_table[index / kv.block_size], kv_head,
                               index % kv.block_size);
}

// s_out[i] = softmax over i of the normalised std of cur row i, for one of K
// or V (pool). scratch: 4 * head_dim floats.
void score_one(const float* pool, const PagedKv& kv, const int32_t* block_table,
               int32_t kv_head, int32_t cur_begin, int32_t ref_begin, int32_t L, float* s_out,
               float* scratch) {
  const int32_t d = kv.head_dim;
  float* mn = scratch;
  float* mx = scratch + d;
  float* range = scratch + 2 * d;
  float* nrm = scratch + 3 * d;

  const float* r0 = row_at(pool, kv, block_table, kv_head, ref_begin);
  std::copy(r0, r0 + d, mn);
  std::copy(r0, r0 + d, mx);
  for (int32_t i = 1; i < L; ++i) {
    const float* r = row_at(pool, kv, block_table, kv_head, ref_begin + i);
    for (int32_t j = 0; j < d; ++j) {
      mn[j] = r[j] < mn[j] ? r[j] : mn[j];
      mx[j] = r[j] > mx[j] ? r[j] : mx[j];
    }
  }
  for (int32_t j = 0; j < d; ++j) {
    const float w = mx[j] - mn[j];
    range[j] = w > 1e-6f ? w : 1e-6f;
  }

  const float inv_d = 1.0f / static_cast<float>(d);
  const float inv_dm1 = 1.0f / static_cast<float>(d - 1);
  for (int32_t i = 0; i < L; ++i) {
    const float* c = row_at(pool, kv, block_table, kv_head, cur_begin + i);
    // NOTE: a true division, as the formula says: with the 1e-6 floor a
    // reciprocal's rounding would be scaled by 1e6.
    for (int32_t j = 0; j < d; ++j) nrm[j] = (c[j] - mn[j]) / range[j];
    const float mean = sum_vec(nrm, d) * inv_d;
    for (int32_t j = 0; j < d; ++j) nrm[j] -= mean;  // two passes: no cancellation
    s_out[i] = std::sqrt(dot_vec(nrm, nrm, d) * inv_dm1);
  }

  const float s_max = max_vec(s_out, L);
  const float inv_total = 1.0f / exp_shift_sum(s_out, L, s_max);
  for (int32_t i = 0; i < L; ++i) s_out[i] *= inv_total;
}

}  // namespace

void lag_score_paged(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                     int32_t cur_begin, int32_t ref_begin, int32_t L, float score_v_weight,
                     float* scores_out) {
  std::vector<float> scratch(4 * static_cast<size_t>(kv.head_dim) + L);
  float* s_v = scratch.data() + 4 * static_cast<size_t>(kv.head_dim);
  score_one(kv.k_pool, kv, block_table, kv_head, cur_begin, ref_begin, L, scores_out,
            scratch.data());
  score_one(kv.v_pool, kv, block_table, kv_head, cur_begin, ref_begin, L, s_v, scratch.data());
  for (int32_t i = 0; i < L; ++i) scores_out[i] += score_v_weight * s_v[i];
}

namespace {

// One element of X (pool) at cache index `index`, channel c.
double element(const float* pool, const PagedKv& kv, const int32_t* block_table,
               int32_t kv_head, int32_t index, int32_t c) {
  return pool[kv.slot_offset(block_table[index / kv.block_size], kv_head,
                             index % kv.block_size) + c];
}

std::vector<double> score_one_reference(const float* pool, const PagedKv& kv,
                                        const int32_t* block_table, int32_t kv_head,
                                        int32_t cur_begin, int32_t ref_begin, int32_t L) {
  const int32_t d = kv.head_dim;
  std::vector<double> s(L, 0.0);
  std::vector<double> nrm(static_cast<size_t>(L) * d);
  for (int32_t c = 0; c < d; ++c) {
    double mn = element(pool, kv, block_table, kv_head, ref_begin, c);
    double mx = mn;
    for (int32_t i = 1; i < L; ++i) {
      const double x = element(pool, kv, block_table, kv_head, ref_begin + i, c);
      mn = std::min(mn, x);
      mx = std::max(mx, x);
    }
    const double range = std::max(mx - mn, 1e-6);
    for (int32_t i = 0; i < L; ++i) {
      nrm[static_cast<size_t>(i) * d + c] =
          (element(pool, kv, block_table, kv_head, cur_begin + i, c) - mn) / range;
    }
  }
  for (int32_t i = 0; i < L; ++i) {
    double mean = 0;
    for (int32_t c = 0; c < d; ++c) mean += nrm[static_cast<size_t>(i) * d + c];
    mean /= d;
    double var = 0;
    for (int32_t c = 0; c < d; ++c) {
      const double dev = nrm[static_cast<size_t>(i) * d + c] - mean;
      var += dev * dev;
    }
    s[i] = std::sqrt(var / (d - 1));
  }
  const double s_max = *std::max_element(s.begin(), s.end());
  double total = 0;
  for (double& x : s) total += (x = std::exp(x - s_max));
  for (double& x : s) x /= total;
  return s;
}

}  // namespace

void lag_score_paged_reference(const PagedKv& kv, const int32_t* block_table, int32_t kv_head,
                               int32_t cur_begin, int32_t ref_begin, int32_t L,
                               float score_v_weight, float* scores_out) {
  const std::vector<double> s_k =
      score_one_reference(kv.k_pool, kv, block_table, kv_head, cur_begin, ref_begin, L);
  const std::vector<double> s_v =
      score_one_reference(kv.v_pool, kv, block_table, kv_head, cur_begin, ref_begin, L);
  for (int32_t i = 0; i < L; ++i) {
    scores_out[i] = static_cast<float>(s_k[i] + score_v_weight * s_v[i]);
  }
}

}  // namespace lagserve::kernels
