// lag_score: one CTA per (due partition, KV head, batch entry); CTAs past
// their entry's n_due return at once. The CTA finds the per-channel min and
// range of ref for K and V, then one warp per cur row computes the normalised
// std of K and V, and the CTA takes the two softmaxes over the rows.
#include "kernels/cuda/lag_score.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxHeadDim = 512;
constexpr int kMaxPairsPerLane = kMaxHeadDim / 2 / 32;  // channel pairs per lane of a row's warp
constexpr int kMaxLag = 2048;  // the CTA's shared memory stays under 48 KiB
constexpr int32_t kMaxGridYz = 65535;  // entries (grid z) and KV heads (grid y)

__device__ float2 load_pair(const bf16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

template <typename T>
__device__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum (or max) over the CTA of one value per thread; every thread gets it.
template <typename T, bool kMax>
__device__ T block_reduce(T v) {
  __shared__ T partial[kWarps];
  v = kMax ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = partial[0];
  for (int i = 1; i < kWarps; ++i) v = kMax ? fmax(v, partial[i]) : v + partial[i];
  __syncthreads();  // partial is reused by the next call
  return v;
}

// Shared memory (floats): partial min/max [4][G][d], mn_k, range_k, mn_v,
// range_v [d] each, s_k and s_v [L] each.
size_t smem_bytes(int32_t d, int32_t L) {
  const int32_t g = kThreads / (d / 2) > 1 ? kThreads / (d / 2) : 1;
  return sizeof(float) * (4 * static_cast<size_t>(g) * d + 4 * static_cast<size_t>(d) + 2 * L);
}

// Grid (max_due, n_kv_heads, n_works); shared memory sized for max_lag.
__global__ __launch_bounds__(kThreads) void lag_score_kernel(PagedKvBf16 kv, const int32_t* tables,
                                                             const LagWork* works, int32_t max_lag,
                                                             float* scores) {
  const LagWork work = works[blockIdx.z];
  const int r = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  // Block-uniform returns, before the first barrier.
  if (r >= work.n_due) return;
  const int32_t L = work.lag, n_due = work.n_due, region = work.region;
  if (n_due > static_cast<int32_t>(gridDim.x) || L < 1 || L > max_lag) {
    if (r == 0 && h == 0 && tid == 0) {
      printf("lagserve: lag_score entry %u needs n_due <= max_due %u and L in [1, max_lag %d], "
             "got n_due %d, L %d\n", blockIdx.z, gridDim.x, max_lag, n_due, L);
      __trap();
    }
    return;
  }
  const int32_t* table = tables + work.table_offset;
  const float w = work.v_weight;
  const int d = kv.head_dim, n_pairs = d / 2;
  const int G = kThreads / n_pairs > 1 ? kThreads / n_pairs : 1;  // row groups for min/max
  extern __shared__ float smem[];
  float* part = smem;                  // [4][G][d]: min K, max K, min V, max V
  float* mn_k = part + 4 * G * d;      // [d]
  float* range_k = mn_k + d;           // [d]
  float* mn_v = range_k + d;           // [d]
  float* range_v = mn_v + d;           // [d]
  float* s_k = range_v + d;            // [L]
  float* s_v = s_k + L;                // [L]
  const int32_t cur0 = region + r * L, ref0 = cur0 + L;

  // 1. Per-channel min and max of ref: thread (g, pair) walks rows g, g+G, ...
  if (tid < G * n_pairs) {
    const int cp = tid % n_pairs, g = tid / n_pairs;
    float2 mnk = make_float2(INFINITY, INFINITY), mxk = make_float2(-INFINITY, -INFINITY);
    float2 mnv = mnk, mxv = mxk;
    for (int i = g; i < L; i += G) {
      const int64_t off = kv.offset(table, h, ref0 + i) + 2 * cp;
      const float2 a = load_pair(kv.k + off), b = load_pair(kv.v + off);
      mnk.x = fminf(mnk.x, a.x), mnk.y = fminf(mnk.y, a.y);
      mxk.x = fmaxf(mxk.x, a.x), mxk.y = fmaxf(mxk.y, a.y);
      mnv.x = fminf(mnv.x, b.x), mnv.y = fminf(mnv.y, b.y);
      mxv.x = fmaxf(mxv.x, b.x), mxv.y = fmaxf(mxv.y, b.y);
    }
    const int j = 2 * cp;
    float* p0 = part + (0 * G + g) * d + j;
    float* p1 = part + (1 * G + g) * d + j;
    float* p2 = part + (2 * G + g) * d + j;
    float* p3 = part + (3 * G + g) * d + j;
    p0[0] = mnk.x, p0[1] = mnk.y, p1[0] = mxk.x, p1[1] = mxk.y;
    p2[0] = mnv.x, p2[1] = mnv.y, p3[0] = mxv.x, p3[1] = mxv.y;
  }
  __syncthreads();
  for (int j = tid; j < d; j += kThreads) {
    float a = part[j], b = part[G * d + j], c = part[2 * G * d + j], e = part[3 * G * d + j];
    for (int g = 1; g < G; ++g) {
      a = fminf(a, part[(0 * G + g) * d + j]);
      b = fmaxf(b, part[(1 * G + g) * d + j]);
      c = fminf(c, part[(2 * G + g) * d + j]);
      e = fmaxf(e, part[(3 * G + g) * d + j]);
    }
    mn_k[j] = a;
    range_k[j] = fmaxf(b - a, 1e-6f);
    mn_v[j] = c;
    range_v[j] = fmaxf(e - c, 1e-6f);
  }
  __syncthreads();

  // 2. s_X[i] = std_j nrm[i, j], one warp per cur row, two passes (no cancellation).
  const int warp = tid / 32, lane = tid % 32;
  for (int i = warp; i < L; i += kWarps) {
    const int64_t base = kv.offset(table, h, cur0 + i);
    float2 nk[kMaxPairsPerLane], nv[kMaxPairsPerLane];
    float sum_k = 0.f, sum_v = 0.f;
#pragma unroll
    for (int q = 0; q < kMaxPairsPerLane; ++q) {
      const int j = 2 * (lane + 32 * q);
      nk[q] = nv[q] = make_float2(0.f, 0.f);
      if (j < d) {
        const float2 a = load_pair(kv.k + base + j), b = load_pair(kv.v + base + j);
        // NOTE: a true division, as the formula says (with the 1e-6 floor a
        // reciprocal's rounding would be scaled by 1e6).
        nk[q].x = __fdiv_rn(a.x - mn_k[j], range_k[j]);
        nk[q].y = __fdiv_rn(a.y - mn_k[j + 1], range_k[j + 1]);
        nv[q].x = __fdiv_rn(b.x - mn_v[j], range_v[j]);
        nv[q].y = __fdiv_rn(b.y - mn_v[j + 1], range_v[j + 1]);
        sum_k += nk[q].x + nk[q].y;
        sum_v += nv[q].x + nv[q].y;
      }
    }
    const float mean_k = __fdiv_rn(warp_sum(sum_k), static_cast<float>(d));
    const float mean_v = __fdiv_rn(warp_sum(sum_v), static_cast<float>(d));
    float ss_k = 0.f, ss_v = 0.f;
#pragma unroll
    for (int q = 0; q < kMaxPairsPerLane; ++q) {
      if (2 * (lane + 32 * q) < d) {
        const float a = nk[q].x - mean_k, b = nk[q].y - mean_k;
        const float c = nv[q].x - mean_v, e = nv[q].y - mean_v;
        ss_k += a * a + b * b;
        ss_v += c * c + e * e;
      }
    }
    ss_k = warp_sum(ss_k);
    ss_v = warp_sum(ss_v);
    if (lane == 0) {
      s_k[i] = sqrtf(__fdiv_rn(ss_k, static_cast<float>(d - 1)));
      s_v[i] = sqrtf(__fdiv_rn(ss_v, static_cast<float>(d - 1)));
    }
  }
  __syncthreads();

  // 3. score = softmax(s_K) + w * softmax(s_V) over the L rows (sums in double).
  float max_k = -INFINITY, max_v = -INFINITY;
  for (int i = tid; i < L; i += kThreads) max_k = fmaxf(max_k, s_k[i]), max_v = fmaxf(max_v, s_v[i]);
  max_k = block_reduce<float, true>(max_k);
  max_v = block_reduce<float, true>(max_v);
  double z_k = 0.0, z_v = 0.0;
  for (int i = tid; i < L; i += kThreads) {
    z_k += expf(s_k[i] - max_k);
    z_v += expf(s_v[i] - max_v);
  }
  const float inv_k = static_cast<float>(1.0 / block_reduce<double, false>(z_k));
  const float inv_v = static_cast<float>(1.0 / block_reduce<double, false>(z_v));
  float* out = scores + work.score_offset + (static_cast<int64_t>(h) * n_due + r) * L;
  for (int i = tid; i < L; i += kThreads) {
    out[i] = expf(s_k[i] - max_k) * inv_k + w * (expf(s_v[i] - max_v) * inv_v);
  }
}

}  // namespace

void lag_score(const PagedKvBf16& kv, const int32_t* tables, const LagWork* works, int32_t n_works,
               int32_t max_due, int32_t max_lag, float* scores, cudaStream_t stream) {
  if (n_works <= 0 || max_due <= 0 || kv.n_kv_heads <= 0) return;
  if (kv.head_dim < 2 || kv.head_dim > kMaxHeadDim || kv.head_dim % 2 != 0 || max_lag < 1 ||
      max_lag > kMaxLag || n_works > kMaxGridYz || kv.n_kv_heads > kMaxGridYz) {
    std::fprintf(stderr,
                 "lagserve: lag_score needs an even head_dim in [2, %d], max_lag in [1, %d], at "
                 "most %d entries and KV heads, got head_dim %d, max_lag %d, %d entries, %d KV "
                 "heads\n", kMaxHeadDim, kMaxLag, kMaxGridYz, kv.head_dim, max_lag, n_works,
                 kv.n_kv_heads);
    std::abort();
  }
  const dim3 grid(static_cast<unsigned>(max_due), static_cast<unsigned>(kv.n_kv_heads),
                  static_cast<unsigned>(n_works));
  lag_score_kernel<<<grid, kThreads, smem_bytes(kv.head_dim, max_lag), stream>>>(kv, tables, works,
                                                                               max_lag, scores);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
