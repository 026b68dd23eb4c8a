#include "kernels/cuda/decode_attention.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/decode_attention_tc.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kMaxSplit = 512;  // keys per split, at most
constexpr int kMinSplit = 128;  // fewer, fuller splits for short contexts: a cheaper merge
constexpr float kLog2e = 1.4426950408889634f;

// 8 bf16 in a 16-byte word, widened to fp32.
__device__ __forceinline__ void unpack8(const uint4& w, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&w);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

// One block per (split, kv head, item). Phase 1: scores, a few lanes per key
// (8 for head_dim >= 64, each D/8 channels), several keys per warp at a time.
// Phase 2: softmax per query head in shared memory. Phase 3: P.V, lane groups
// over the keys, each lane D/32 channels (at least 2); the groups' sums meet
// in shared memory.
// kMasked: the launch may have masked items. For such an item (mask_len > 0,
// a block-uniform branch) the prologue reads its split's flags into shared
// memory, and a pass between phases 1 and 2 sets the hidden keys' scores to
// -inf; other items load nothing more.
// NOTE: a separate instantiation rather than a runtime flag: the unmasked
// kernel stays exactly the plain decode kernel (ptxas register allocation
// here is fragile, a few live values more tip some shapes into spills).
template <int D, int G, bool kMasked>
__global__ void __launch_bounds__(kThreads)
decode_partial(PagedKvBf16 kv, const int32_t* __restrict__ tables,
               const DecodeItem* __restrict__ items, const uint8_t* __restrict__ selected,
               const float* __restrict__ q, int64_t q_row_stride, bf16* __restrict__ out,
               int64_t out_row_stride, int32_t n_heads, float scale_log2, int32_t split_len,
               int32_t max_splits, float* __restrict__ ws_acc, float* __restrict__ ws_ml) {
  pdl_release();
  pdl_wait();
  // Phase 1: 8 channels (one 16-byte load) or more per lane, at most 8 lanes per key.
  constexpr int kLanesPerKey = D >= 64 ? 8 : D / 8, kChanPerLane = D / kLanesPerKey;
  constexpr int kKeysPerWarp = 32 / kLanesPerKey, kKeysPerIter = kWarps * kKeysPerWarp;
  // Phase 3: at least 2 channels (one bf16x2) per lane.
  constexpr int kChanPerLaneV = D >= 64 ? D / 32 : 2, kLanesPerKeyV = D / kChanPerLaneV;
  constexpr int kKeysPerWarpV = 32 / kLanesPerKeyV;
  __shared__ float q_s[G][D];
  __shared__ float sc[G][kMaxSplit];
  __shared__ float red[G][D];
  __shared__ int32_t blk[kMaxSplit / 16 + 2];
  __shared__ float m_s[G], l_s[G];
  // kMasked: keys [hide_lo_s, hide_hi_s) of the split (from begin) may be
  // hidden, hidden_s[j] says which.
  __shared__ uint8_t hidden_s[kMasked ? kMaxSplit : 1];
  __shared__ int32_t hide_lo_s, hide_hi_s;

  const DecodeItem item = items[blockIdx.z];
  const int32_t kvh = blockIdx.y, split = blockIdx.x;
  const int32_t begin = split * split_len;
  if (begin >= item.ctx_len) return;
  const int32_t end = min(item.ctx_len, begin + split_len), n = end - begin;
  const int32_t n_splits = (item.ctx_len + split_len - 1) / split_len;
  const int32_t* table = tables + item.table_offset;
  const int32_t bs = kv.block_size, n_kv = kv.n_kv_heads;
  const int32_t first_blk = begin / bs, n_blk = (end - 1) / bs - first_blk + 1;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  const float* qrow = q + static_cast<int64_t>(item.row) * q_row_stride + static_cast<int64_t>(kvh) * G * D;
  for (int e = tid; e < G * D; e += kThreads) {
    q_s[e / D][e % D] = qrow[e] * scale_log2;
    red[e / D][e % D] = 0.f;
  }
  for (int b = tid; b < n_blk; b += kThreads) blk[b] = table[first_blk + b];
  if constexpr (kMasked) {
    // Read the flags here, beside q, so no mask state stays live in phase 1.
    int32_t lo = 0, hi = 0;
    if (item.mask_len > 0) {  // block-uniform
      lo = max(begin, item.mask_begin);
      hi = min(end, min(item.hide_end, item.mask_begin + item.mask_len));
      const uint8_t* sel = selected + item.sel_offset + static_cast<int64_t>(kvh) * item.mask_len;
      for (int32_t idx = lo + tid; idx < hi; idx += kThreads) {
        hidden_s[idx - begin] = sel[idx - item.mask_begin] == 0;
      }
    }
    if (tid == 0) {
      hide_lo_s = lo - begin;
      hide_hi_s = hi - begin;
    }
  }
  __syncthreads();

  // Phase 1: scores (log2 domain).
  {
    const int sub = lane / kLanesPerKey, part = lane % kLanesPerKey;
    float qr[G][kChanPerLane];
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int i = 0; i < kChanPerLane; ++i) qr[g][i] = q_s[g][part * kChanPerLane + i];
    // Four keys per lane per iteration: the raw loads first, so that more
    // bytes are in flight, then the arithmetic.
    constexpr int kKU = 4, kWords = kChanPerLane / 8;
    for (int jb = 0; jb < n; jb += kKU * kKeysPerIter) {
      uint4 kraw[kKU][kWords];
#pragma unroll
      for (int u = 0; u < kKU; ++u) {
        const int j = jb + u * kKeysPerIter + warp * kKeysPerWarp + sub;
        if (j < n) {
          const int32_t idx = begin + j;
          const int64_t off =
              ((static_cast<int64_t>(blk[idx / bs - first_blk]) * n_kv + kvh) * bs + idx % bs) * D +
              part * kChanPerLane;
          const uint4* src = reinterpret_cast<const uint4*>(kv.k + off);
#pragma unroll
          for (int w = 0; w < kWords; ++w) kraw[u][w] = __ldg(src + w);
        } else {
#pragma unroll
          for (int w = 0; w < kWords; ++w) kraw[u][w] = make_uint4(0, 0, 0, 0);
        }
      }
#pragma unroll
      for (int u = 0; u < kKU; ++u) {
        const int j = jb + u * kKeysPerIter + warp * kKeysPerWarp + sub;
        float kf[kChanPerLane];
#pragma unroll
        for (int w = 0; w < kWords; ++w) unpack8(kraw[u][w], kf + 8 * w);
        float dot[G];
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float s = 0.f;
#pragma unroll
          for (int i = 0; i < kChanPerLane; ++i) s = fmaf(qr[g][i], kf[i], s);
          dot[g] = s;
        }
#pragma unroll
        for (int o = kLanesPerKey / 2; o > 0; o >>= 1)
#pragma unroll
          for (int g = 0; g < G; ++g) dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], o);
        if (j < n && part == 0) {
#pragma unroll
          for (int g = 0; g < G; ++g) sc[g][j] = dot[g];
        }
      }
    }
  }
  __syncthreads();

  // The mask: hidden keys of this split score -inf.
  if constexpr (kMasked) {
    const int32_t lo = hide_lo_s, hi = hide_hi_s;
    if (lo < hi) {  // block-uniform
      for (int32_t j = lo + tid; j < hi; j += kThreads) {
        if (hidden_s[j]) {
#pragma unroll
          for (int g = 0; g < G; ++g) sc[g][j] = -INFINITY;
        }
      }
      __syncthreads();
    }
  }

  // Phase 2: per query head, max and exp2 in place, sum. A split whose keys
  // are all hidden has m = -inf: its weights are 0 and l = 0 (not NaN).
  for (int g = warp; g < G; g += kWarps) {
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, sc[g][j]);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float m_sub = kMasked && m == -INFINITY ? 0.f : m;
    float l = 0.f;
    for (int j = lane; j < n; j += 32) {
      const float p = exp2f(sc[g][j] - m_sub);
      sc[g][j] = p;
      l += p;
    }
    for (int o = 16; o > 0; o >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o);
    if (lane == 0) {
      m_s[g] = m;
      l_s[g] = l;
    }
  }
  __syncthreads();

  // Phase 3: P.V.
  float acc[G][kChanPerLaneV];
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int i = 0; i < kChanPerLaneV; ++i) acc[g][i] = 0.f;
  // Eight keys per lane group per iteration, the raw loads first.
  constexpr int kU = 8, kKeysPerIterV = kWarps * kKeysPerWarpV;
  using VRaw = std::conditional_t<kChanPerLaneV == 4, uint2, unsigned int>;
  const int subv = lane / kLanesPerKeyV, partv = lane % kLanesPerKeyV;
  for (int jb = warp * kKeysPerWarpV + subv; jb < n; jb += kU * kKeysPerIterV) {
    VRaw vraw[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int j = jb + u * kKeysPerIterV;
      if (j >= n) {
        vraw[u] = VRaw{};
        continue;
      }
      const int32_t idx = begin + j;
      const int64_t off =
          ((static_cast<int64_t>(blk[idx / bs - first_blk]) * n_kv + kvh) * bs + idx % bs) * D +
          partv * kChanPerLaneV;
      vraw[u] = __ldg(reinterpret_cast<const VRaw*>(kv.v + off));
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int j = jb + u * kKeysPerIterV;
      if (j >= n) break;
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&vraw[u]);
      float vf[kChanPerLaneV];
#pragma unroll
      for (int i = 0; i < kChanPerLaneV / 2; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        vf[2 * i] = f.x;
        vf[2 * i + 1] = f.y;
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float p = sc[g][j];
#pragma unroll
        for (int i = 0; i < kChanPerLaneV; ++i) acc[g][i] = fmaf(p, vf[i], acc[g][i]);
      }
    }
  }
  // The lane groups' partial sums meet in shared memory.
#pragma unroll
  for (int g = 0; g < G; ++g)
#pragma unroll
    for (int i = 0; i < kChanPerLaneV; ++i) atomicAdd(&red[g][partv * kChanPerLaneV + i], acc[g][i]);
  __syncthreads();

  for (int e = tid; e < G * D; e += kThreads) {
    const int g = e / D, c = e % D;
    const float s = red[g][c];
    const int32_t h = kvh * G + g;
    if (n_splits == 1) {
      out[static_cast<int64_t>(item.row) * out_row_stride + static_cast<int64_t>(h) * D + c] =
          __float2bfloat16(!kMasked || l_s[g] > 0.f ? s / l_s[g] : 0.f);
    } else {
      const int64_t slot = (static_cast<int64_t>(blockIdx.z) * n_heads + h) * max_splits + split;
      ws_acc[slot * D + c] = s;
      if (c == 0) {
        ws_ml[slot * 2] = m_s[g];
        ws_ml[slot * 2 + 1] = l_s[g];
      }
    }
  }
}

// One block per (query head, item) merges the splits: kMergeParts threads
// per channel (max(D, 32) channels), the k-th summing the splits s with
// s % kMergeParts == k, so that a thread has few loads of the workspace and
// issues them together (one round for up to 48 splits: the 36 of one
// sequence of 4.5K keys, where one thread per channel took five rounds).
// The splits' m and l are loaded once; their weights go through shared
// memory kT splits at a time. The sums: each part in split order, the parts
// in part order, l over the block in a fixed tree; all of it depends on the
// number of splits only.
constexpr int kMergeParts = 4;

template <int D>
__host__ __device__ constexpr int merge_threads() {
  return kMergeParts * (D < 32 ? 32 : D);
}

template <int D>
__global__ void __launch_bounds__(merge_threads<D>())
decode_merge(const DecodeItem* __restrict__ items, bf16* __restrict__ out,
             int64_t out_row_stride, int32_t n_heads, int32_t split_len, int32_t max_splits,
             const float* __restrict__ ws_acc, const float* __restrict__ ws_ml) {
  constexpr int kT = merge_threads<D>(), kC = kT / kMergeParts, kBatch = 12;
  __shared__ float f_s[kT], part_s[kMergeParts][kC], red[kT / 32];
  pdl_release();
  const DecodeItem item = items[blockIdx.y];  // uploaded before the step: read before pdl_wait
  pdl_wait();
  const int32_t h = blockIdx.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int32_t c = tid % kC, part = tid / kC;
  const int32_t n_splits = (item.ctx_len + split_len - 1) / split_len;
  if (n_splits <= 1) return;  // block-uniform
  const int64_t base = (static_cast<int64_t>(blockIdx.y) * n_heads + h) * max_splits;
  const float2* const ml = reinterpret_cast<const float2*>(ws_ml) + base;
  const float2 ml0 = tid < n_splits ? ml[tid] : make_float2(-INFINITY, 0.f);  // the first kT splits
  float m = ml0.x;
  for (int32_t s = tid + kT; s < n_splits; s += kT) m = fmaxf(m, ml[s].x);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) red[warp] = m;
  __syncthreads();
  m = red[0];
#pragma unroll
  for (int w = 1; w < kT / 32; ++w) m = fmaxf(m, red[w]);
  float lf = 0.f, o = 0.f;  // this thread's splits' l * f; channel c's sum over its part's splits
  for (int32_t s0 = 0; s0 < n_splits; s0 += kT) {
    const int32_t s = s0 + tid;
    float f = 0.f;
    if (s < n_splits) {
      const float2 v = s0 == 0 ? ml0 : ml[s];
      if (v.y > 0.f) {  // 0: every key of the split hidden (m = -inf)
        f = exp2f(v.x - m);
        lf += v.y * f;
      }
    }
    __syncthreads();  // the previous chunk's weights are used; red is read
    f_s[tid] = f;
    __syncthreads();
    const int32_t n = min(kT, n_splits - s0);
    if (c < D) {  // kBatch independent loads at a time
      const float* acc = ws_acc + (base + s0) * D + c;
      for (int32_t j0 = part; j0 < n; j0 += kBatch * kMergeParts) {
        float a[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int32_t j = j0 + u * kMergeParts;
          a[u] = j < n ? acc[static_cast<int64_t>(j) * D] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int32_t j = j0 + u * kMergeParts;
          if (j < n) o = fmaf(f_s[j], a[u], o);
        }
      }
    }
  }
  for (int k = 16; k > 0; k >>= 1) lf += __shfl_xor_sync(0xffffffffu, lf, k);
  if (lane == 0) red[warp] = lf;
  part_s[part][c] = o;
  __syncthreads();
  if (part != 0 || c >= D) return;
  float l = red[0];
#pragma unroll
  for (int w = 1; w < kT / 32; ++w) l += red[w];
  float sum = part_s[0][c];
#pragma unroll
  for (int k = 1; k < kMergeParts; ++k) sum += part_s[k][c];
  out[static_cast<int64_t>(item.row) * out_row_stride + static_cast<int64_t>(h) * D + c] =
      __float2bfloat16(l > 0.f ? sum / l : 0.f);
}

template <int D, int G>
void launch(const PagedKvBf16& kv, const int32_t* tables, const DecodeItem* items, int32_t n_items,
            const DecodePlan& plan, const float* q, int64_t q_row_stride, bf16* out,
            int64_t out_row_stride, int32_t n_heads, float scale, const uint8_t* selected,
            float* workspace, cudaStream_t stream) {
  const int64_t acc_floats = static_cast<int64_t>(n_items) * n_heads * plan.max_splits * D;
  float* ws_acc = workspace;
  float* ws_ml = workspace + acc_floats;
  const dim3 grid(plan.max_splits, kv.n_kv_heads, n_items);
  if (selected == nullptr && detail::decode_tc_supported(kv, G)) {
    detail::decode_partial_tc(kv, tables, items, n_items, plan, q, q_row_stride, out,
                              out_row_stride, n_heads, scale * kLog2e, ws_acc, ws_ml, stream);
  } else if (selected == nullptr) {
    launch_pdl(decode_partial<D, G, false>, grid, dim3(kThreads), 0, stream, kv, tables, items,
               nullptr, q, q_row_stride, out, out_row_stride, n_heads, scale * kLog2e,
               plan.split_len, plan.max_splits, ws_acc, ws_ml);
  } else {
    launch_pdl(decode_partial<D, G, true>, grid, dim3(kThreads), 0, stream, kv, tables, items,
               selected, q, q_row_stride, out, out_row_stride, n_heads, scale * kLog2e,
               plan.split_len, plan.max_splits, ws_acc, ws_ml);
  }
  LAGSERVE_CUDA_CHECK_LAUNCH();
  if (plan.max_splits > 1) {
    launch_pdl(decode_merge<D>, dim3(n_heads, n_items), dim3(merge_threads<D>()), 0, stream,
               items, out, out_row_stride, n_heads, plan.split_len, plan.max_splits, ws_acc,
               ws_ml);
    LAGSERVE_CUDA_CHECK_LAUNCH();
  }
}

template <int D>
void launch_group(int32_t group, const PagedKvBf16& kv, const int32_t* tables,
                  const DecodeItem* items, int32_t n_items, const DecodePlan& plan, const float* q,
                  int64_t q_row_stride, bf16* out, int64_t out_row_stride, int32_t n_heads,
                  float scale, const uint8_t* selected, float* workspace, cudaStream_t stream) {
#define LAGSERVE_DECODE_CASE(G)                                                               \
  case G:                                                                                     \
    return launch<D, G>(kv, tables, items, n_items, plan, q, q_row_stride, out, out_row_stride, \
                        n_heads, scale, selected, workspace, stream);
  switch (group) {
    LAGSERVE_DECODE_CASE(1)
    LAGSERVE_DECODE_CASE(2)
    LAGSERVE_DECODE_CASE(3)
    LAGSERVE_DECODE_CASE(4)
    LAGSERVE_DECODE_CASE(5)
    LAGSERVE_DECODE_CASE(6)
    LAGSERVE_DECODE_CASE(7)
    LAGSERVE_DECODE_CASE(8)
    default:
      break;
  }
#undef LAGSERVE_DECODE_CASE
  std::fprintf(stderr, "lagserve: decode_attention supports 1 to 8 query heads per KV head, got %d\n",
               group);
  std::abort();
}

}  // namespace

DecodePlan decode_attention_plan(int32_t max_ctx, int64_t total_ctx, int32_t n_items,
                                 int32_t n_kv_heads, int32_t sm_count) {
  // Blocks run in waves of about two per multiprocessor. Of the split lengths
  // kMinSplit, 2 * kMinSplit, ... kMaxSplit, take the one whose waves cost
  // least (waves x (keys + a fixed ~64-key cost per block), items assumed of
  // the mean length); ties to the longer split (fewer to merge). NOTE: a
  // last wave that is mostly empty costs a whole wave; 32 sequences of 8K
  // keys on 132 SMs take 4.1 waves at 512 but 8.0 at 256.
  const int64_t wave = 2LL * std::max(sm_count, 1);
  const int64_t items = std::max(n_items, 1);
  const int64_t mean = std::max<int64_t>((total_ctx + items - 1) / items, 1);
  int64_t best_len = kMinSplit, best_cost = std::numeric_limits<int64_t>::max();
  for (int64_t len = kMinSplit; len <= kMaxSplit; len += kMinSplit) {
    const int64_t blocks = items * ((mean + len - 1) / len) * std::max(n_kv_heads, 1);
    const int64_t cost = (blocks + wave - 1) / wave * (len + 64);
    if (cost <= best_cost) best_cost = cost, best_len = len;
  }
  DecodePlan plan;
  plan.split_len = static_cast<int32_t>(best_len);
  plan.max_splits = std::max<int32_t>(1, static_cast<int32_t>((max_ctx + best_len - 1) / best_len));
  return plan;
}

int64_t decode_attention_workspace(const DecodePlan& plan, int32_t n_items, int32_t n_heads,
                                   int32_t head_dim) {
  return static_cast<int64_t>(n_items) * n_heads * plan.max_splits * (head_dim + 2);
}

void decode_attention(const PagedKvBf16& kv, const int32_t* tables, const DecodeItem* items,
                      int32_t n_items, const DecodePlan& plan, const float* q,
                      int64_t q_row_stride, bf16* out, int64_t out_row_stride, int32_t n_heads,
                      float scale, const uint8_t* selected, float* workspace,
                      cudaStream_t stream) {
  if (n_items == 0) return;
  const int32_t group = n_heads / kv.n_kv_heads;
  if (kv.head_dim == 16) {
    launch_group<16>(group, kv, tables, items, n_items, plan, q, q_row_stride, out,
                     out_row_stride, n_heads, scale, selected, workspace, stream);
  } else if (kv.head_dim == 32) {
    launch_group<32>(group, kv, tables, items, n_items, plan, q, q_row_stride, out,
                     out_row_stride, n_heads, scale, selected, workspace, stream);
  } else if (kv.head_dim == 64) {
    launch_group<64>(group, kv, tables, items, n_items, plan, q, q_row_stride, out,
                     out_row_stride, n_heads, scale, selected, workspace, stream);
  } else if (kv.head_dim == 128) {
    launch_group<128>(group, kv, tables, items, n_items, plan, q, q_row_stride, out,
                      out_row_stride, n_heads, scale, selected, workspace, stream);
  } else {
    std::fprintf(stderr, "lagserve: decode_attention supports head_dim 16, 32, 64 and 128, got %d\n",
                 kv.head_dim);
    std::abort();
  }
}

}  // namespace lagserve::kernels::cuda
