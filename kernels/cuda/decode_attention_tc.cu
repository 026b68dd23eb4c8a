// decode_attention's tensor-core partial kernel. One block per (split, kv
// head, item), 4 warps; each warp streams its own 16-key tiles of the split
// (tiles w, w + 4, ...) through a private cp.async ring in shared memory and
// keeps an online softmax, FA2-style; the four warps meet in shared memory at
// the end.
//
// The m16 rows of the mma are the group's query heads, twice: rows g < 8 hold
// the bf16 rounding of head g's query (pre-scaled into log2 units), rows
// g + 8 the rounding error. A thread's accumulator holds rows g and g + 8 of
// the same columns, so the fp32 score is c0 + c2: Q keeps about 16 bits of
// mantissa at no cost, since a group of at most 8 heads leaves those rows
// idle anyway. P V does the same with the probabilities (hi in rows g, lo in
// rows g + 8), so the output matches the scalar fp32 kernel's precision.
#include "kernels/cuda/decode_attention_tc.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mma_sm80.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda::detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTileKeys = 16;  // one k16 step of P V; never straddles a cache block
constexpr int kStages = 3;     // tiles in a warp's ring: two in flight while one is used

template <int D>
constexpr size_t smem_bytes() {  // per warp: kStages x (K, V) x [kTileKeys, D]
  return static_cast<size_t>(kWarps) * kStages * 2 * kTileKeys * D * sizeof(bf16);
}

// hi + lo = x to about 16 mantissa bits.
__device__ __forceinline__ void split_bf16(float x, float& hi, float& lo) {
  hi = __bfloat162float(__float2bfloat16_rn(x));
  lo = x - hi;
}

template <int D, int G>
__global__ void __launch_bounds__(kThreads)
decode_partial_tc_kernel(PagedKvBf16 kv, const int32_t* __restrict__ tables,
                         const DecodeItem* __restrict__ items, const float* __restrict__ q,
                         int64_t q_row_stride, bf16* __restrict__ out, int64_t out_row_stride,
                         int32_t n_heads, float scale_log2, int32_t split_len,
                         int32_t max_splits, float* __restrict__ ws_acc,
                         float* __restrict__ ws_ml) {
  static_assert(G >= 1 && G <= 8, "query heads per kv head");
  pdl_release();
  constexpr int kChunks = D / 8;    // 16-byte chunks per row
  constexpr int kKSteps = D / 16;   // k16 steps of Q K^T
  constexpr int kDTiles = D / 8;    // n8 tiles of O
  constexpr int kLoads = kTileKeys * kChunks / 32;  // cp.async per lane per K (or V) tile
  constexpr int kStageElems = 2 * kTileKeys * D;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  bf16* const ring = reinterpret_cast<bf16*>(smem_raw) + warp * kStages * kStageElems;

  // The items and block tables are uploaded before the step's first kernel
  // (no kernel writes them): read before pdl_wait, with this warp's first
  // cache blocks, and so are the first tiles whose keys all lie below
  // item.cached_len. The queries and newer keys wait: the kernels before may
  // be writing them.
  const DecodeItem item = items[blockIdx.z];
  const int32_t kvh = blockIdx.y, split = blockIdx.x;
  const int32_t begin = split * split_len;
  if (begin >= item.ctx_len) {  // block-uniform
    pdl_wait();  // every block waits, so that this grid ends after the one before
    return;
  }
  const int32_t n = min(item.ctx_len, begin + split_len) - begin;
  const int32_t n_splits = (item.ctx_len + split_len - 1) / split_len;
  const int32_t n_tiles = (n + kTileKeys - 1) / kTileKeys;
  const int32_t* table = tables + item.table_offset;
  const int32_t bs = kv.block_size, n_kv = kv.n_kv_heads;
  const int32_t my_tiles = n_tiles > warp ? (n_tiles - warp + kWarps - 1) / kWarps : 0;
  // This warp's i-th tile is the split's tile warp + i * kWarps; its cache block.
  auto tile_block = [&](int32_t i) {
    return __ldg(table + (begin + (warp + i * kWarps) * kTileKeys) / bs);
  };
  int32_t first_blocks[kStages - 1];
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) first_blocks[i] = i < my_tiles ? tile_block(i) : 0;

  // Keys past the split's end load as zeros: their scores are set to -inf,
  // and V must not hold the NaN an unused cache slot may contain (0 * NaN is
  // NaN).
  auto issue = [&](int32_t i, int32_t block) {
    if (i < my_tiles) {
      const int32_t k0 = (warp + i * kWarps) * kTileKeys;  // in the split
      const int32_t idx0 = begin + k0;
      const int64_t base = ((static_cast<int64_t>(block) * n_kv + kvh) * bs + idx0 % bs) * D;
      bf16* const k_s = ring + (i % kStages) * kStageElems;
      bf16* const v_s = k_s + kTileKeys * D;
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        const int c = lane + 32 * u, r = c / kChunks, ch = c % kChunks;
        const bool valid = k0 + r < n;
        const int64_t off = valid ? base + static_cast<int64_t>(r) * D + ch * 8 : 0;
        cp_async16(smem_u32(k_s + swz<D>(r, ch)), kv.k + off, valid);
        cp_async16(smem_u32(v_s + swz<D>(r, ch)), kv.v + off, valid);
      }
    }
    cp_async_commit();  // possibly empty: every lane commits one group per call
  };

  float o[kDTiles][4];
#pragma unroll
  for (int dt = 0; dt < kDTiles; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
  float m = -INFINITY, l = 0.f;  // row g's running max (log2 units) and this lane's sum

  // Tiles 0, 1, ... in order (one commit group each) while their keys are
  // cached_len's, then the wait, then the rest of the first tiles.
  int pre = 0;
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    const int32_t tile_end = begin + min(n, (warp + i * kWarps + 1) * kTileKeys);
    if (pre == i && i < my_tiles && tile_end <= item.cached_len) {
      issue(i, first_blocks[i]);
      ++pre;
    }
  }
  pdl_wait();
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i >= pre) issue(i, first_blocks[i]);
  }

  // Q as A fragments: rows g the bf16 part, rows g + 8 the remainder.
  uint32_t qa[kKSteps][4];
  {
    const float* qrow = q + static_cast<int64_t>(item.row) * q_row_stride +
                        (static_cast<int64_t>(kvh) * G + g) * D;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      float x[4] = {0.f, 0.f, 0.f, 0.f};
      if (g < G) {
        const float2 a = __ldg(reinterpret_cast<const float2*>(qrow + kk * 16 + 2 * t));
        const float2 b = __ldg(reinterpret_cast<const float2*>(qrow + kk * 16 + 8 + 2 * t));
        x[0] = a.x * scale_log2, x[1] = a.y * scale_log2;
        x[2] = b.x * scale_log2, x[3] = b.y * scale_log2;
      }
      float hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) split_bf16(x[e], hi[e], lo[e]);
      qa[kk][0] = pack_bf16(hi[0], hi[1]);
      qa[kk][1] = pack_bf16(lo[0], lo[1]);
      qa[kk][2] = pack_bf16(hi[2], hi[3]);
      qa[kk][3] = pack_bf16(lo[2], lo[3]);
    }
  }

  for (int32_t i = 0; i < my_tiles; ++i) {
    const int32_t next = i + kStages - 1;
    issue(next, next < my_tiles ? tile_block(next) : 0);
    cp_async_wait<kStages - 1>();  // tile i has landed for this lane ...
    __syncwarp();                  // ... and for the warp
    const bf16* const k_s = ring + (i % kStages) * kStageElems;
    const bf16* const v_s = k_s + kTileKeys * D;
    const int32_t k0 = (warp + i * kWarps) * kTileKeys;

    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      // Matrices: keys 0..7 / 8..15 of the tile, channels 16kk + 0..7 / 8..15
      // -> b0, b1 of n tile 0, then of n tile 1.
      uint32_t b[4];
      const int key = (lane & 7) + ((lane >> 4) << 3);
      ldmatrix_x4(b, smem_u32(k_s + swz<D>(key, 2 * kk + ((lane >> 3) & 1))));
      mma_bf16(s[0], qa[kk], b[0], b[1]);
      mma_bf16(s[1], qa[kk], b[2], b[3]);
    }
    // Head g's scores of keys k0 + nt * 8 + 2t + e: the two halves summed.
    float sc[2][2];
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const bool valid = k0 + nt * 8 + 2 * t + e < n;
        sc[nt][e] = valid ? s[nt][e] + s[nt][2 + e] : -INFINITY;
        mx = fmaxf(mx, sc[nt][e]);
      }
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m, mx);  // finite: a tile has at least one valid key
    const float alpha = exp2_approx(m - m_new);
    m = m_new;
    float hi[2][2], lo[2][2], sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float p = exp2_approx(sc[nt][e] - m_new);
        sum += p;
        split_bf16(p, hi[nt][e], lo[nt][e]);
      }
    }
    l = l * alpha + sum;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dt][e] *= alpha;
    }
    const uint32_t pa[4] = {pack_bf16(hi[0][0], hi[0][1]), pack_bf16(lo[0][0], lo[0][1]),
                            pack_bf16(hi[1][0], hi[1][1]), pack_bf16(lo[1][0], lo[1][1])};
#pragma unroll
    for (int dp = 0; dp < kDTiles / 2; ++dp) {
      // Transposed matrices: keys 0..15, channels 16dp + 0..7 / 8..15 -> b0, b1
      // of d tile 2dp, then of 2dp + 1.
      uint32_t b[4];
      ldmatrix_x4_trans(b, smem_u32(v_s + swz<D>(lane & 15, 2 * dp + (lane >> 4))));
      mma_bf16(o[2 * dp], pa, b[0], b[1]);
      mma_bf16(o[2 * dp + 1], pa, b[2], b[3]);
    }
    __syncwarp();  // the warp is done with this stage before it is refilled
  }
  cp_async_wait<0>();
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);

  // The four warps meet in shared memory (the rings are no longer read).
  __syncthreads();
  float* const o_s = reinterpret_cast<float*>(smem_raw);  // [kWarps][G][D]
  float* const m_s = o_s + kWarps * G * D;                // [kWarps][G]
  float* const l_s = m_s + kWarps * G;                    // [kWarps][G]
  if (g < G) {
    float* const dst = o_s + (warp * G + g) * D;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      dst[dt * 8 + 2 * t] = o[dt][0] + o[dt][2];
      dst[dt * 8 + 2 * t + 1] = o[dt][1] + o[dt][3];
    }
    if (t == 0) {
      m_s[warp * G + g] = m;  // -inf for a warp without tiles (its l and o are 0)
      l_s[warp * G + g] = l;
    }
  }
  __syncthreads();
  for (int e = tid; e < G * D; e += kThreads) {
    const int hg = e / D, c = e % D;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mm = fmaxf(mm, m_s[w * G + hg]);
    float ls = 0.f, os = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = exp2_approx(m_s[w * G + hg] - mm);
      ls += l_s[w * G + hg] * f;
      os += o_s[(w * G + hg) * D + c] * f;
    }
    const int32_t h = kvh * G + hg;
    if (n_splits == 1) {
      out[static_cast<int64_t>(item.row) * out_row_stride + static_cast<int64_t>(h) * D + c] =
          __float2bfloat16(os / ls);
    } else {
      const int64_t slot = (static_cast<int64_t>(blockIdx.z) * n_heads + h) * max_splits + split;
      ws_acc[slot * D + c] = os;
      if (c == 0) {
        ws_ml[slot * 2] = mm;
        ws_ml[slot * 2 + 1] = ls;
      }
    }
  }
}

template <int D, int G>
void launch(const PagedKvBf16& kv, const int32_t* tables, const DecodeItem* items,
            int32_t n_items, const DecodePlan& plan, const float* q, int64_t q_row_stride,
            bf16* out, int64_t out_row_stride, int32_t n_heads, float scale_log2, float* ws_acc,
            float* ws_ml, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<D>();
  static_assert(smem >= (kWarps * G * D + 2 * kWarps * G) * sizeof(float), "merge area");
  // Once per process (one device): more than 48 KiB of dynamic shared memory.
  static const bool configured = [] {
    LAGSERVE_CUDA_CHECK(cudaFuncSetAttribute(decode_partial_tc_kernel<D, G>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem)));
    return true;
  }();
  (void)configured;
  const dim3 grid(plan.max_splits, kv.n_kv_heads, n_items);
  launch_pdl(decode_partial_tc_kernel<D, G>, grid, dim3(kThreads), smem, stream, kv, tables,
             items, q, q_row_stride, out, out_row_stride, n_heads, scale_log2, plan.split_len,
             plan.max_splits, ws_acc, ws_ml);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

template <int D>
void launch_group(int32_t group, const PagedKvBf16& kv, const int32_t* tables,
                  const DecodeItem* items, int32_t n_items, const DecodePlan& plan,
                  const float* q, int64_t q_row_stride, bf16* out, int64_t out_row_stride,
                  int32_t n_heads, float scale_log2, float* ws_acc, float* ws_ml,
                  cudaStream_t stream) {
  switch (group) {
#define LAGSERVE_DECODE_TC_CASE(G)                                                           \
  case G:                                                                                    \
    return launch<D, G>(kv, tables, items, n_items, plan, q, q_row_stride, out,              \
                        out_row_stride, n_heads, scale_log2, ws_acc, ws_ml, stream);
    LAGSERVE_DECODE_TC_CASE(1)
    LAGSERVE_DECODE_TC_CASE(2)
    LAGSERVE_DECODE_TC_CASE(3)
    LAGSERVE_DECODE_TC_CASE(4)
    LAGSERVE_DECODE_TC_CASE(5)
    LAGSERVE_DECODE_TC_CASE(6)
    LAGSERVE_DECODE_TC_CASE(7)
    LAGSERVE_DECODE_TC_CASE(8)
#undef LAGSERVE_DECODE_TC_CASE
    default:
      break;
  }
}

}  // namespace

bool decode_tc_supported(const PagedKvBf16& kv, int32_t group) {
  return (kv.head_dim == 64 || kv.head_dim == 128) && kv.block_size % kTileKeys == 0 &&
         group >= 1 && group <= 8;
}

void decode_partial_tc(const PagedKvBf16& kv, const int32_t* tables, const DecodeItem* items,
                       int32_t n_items, const DecodePlan& plan, const float* q,
                       int64_t q_row_stride, bf16* out, int64_t out_row_stride, int32_t n_heads,
                       float scale_log2, float* ws_acc, float* ws_ml, cudaStream_t stream) {
  const int32_t group = n_heads / kv.n_kv_heads;
  if (kv.head_dim == 64) {
    launch_group<64>(group, kv, tables, items, n_items, plan, q, q_row_stride, out,
                     out_row_stride, n_heads, scale_log2, ws_acc, ws_ml, stream);
  } else {
    launch_group<128>(group, kv, tables, items, n_items, plan, q, q_row_stride, out,
                      out_row_stride, n_heads, scale_log2, ws_acc, ws_ml, stream);
  }
}

}  // namespace lagserve::kernels::cuda::detail
