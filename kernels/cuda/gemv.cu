// gemv_bf16: y^T = w * a^T on mma.m16n8k16, w's rows (output features) as the
// m16 side, the activation rows as n8 tiles (up to 4: 32 rows).
//
// A block owns two 16-feature tiles (a "pair": consecutive features, or the
// gate and up features of SwiGLU, or the two rotation halves of a RoPE head)
// and a share of K: its warps are (tile, K slice), and when the shape has too
// few pairs to fill the GPU, blocks split K too and the last block of a pair
// to finish sums the others' partial sums in a fixed order.
//
// Loads skip shared memory: within a 64-wide chunk of K, lane (g, t) reads
// elements 8t..8t+7 and 32+8t..32+8t+7 of w rows g and g + 8 and of
// activation row g (each load instruction covers whole 32-byte sectors), and
// k16 step s takes elements 4s..4s+3 of those 16. That permutes K inside the
// chunk, identically for both operands, so the dot products are unchanged.
// w streams past L1 (it is read once); the activations stay there.
#include "kernels/cuda/gemv.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv_common.h"
#include "kernels/cuda/mma_sm80.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kMaxRows = 32;      // rows per launch: 4 n8 tiles
constexpr int kMaxWarpSplit = 4;  // K slices inside a block (block = 2 x this many warps)
constexpr int kMaxSplit = 16;     // K slices in all

struct Split {
  int32_t in_block = 1, blocks = 1;  // K slices per block, blocks per pair
};

// Slices of K: enough warps for about 16 per SM, each slice a multiple of
// 16 and at least 64 long. Depends on the shape and the GPU only.
Split plan_split(int64_t N, int64_t K, int32_t sm_count) {
  const int64_t pairs = N / 32, target = 16LL * sm_count;
  int32_t s = 1;
  while (s < kMaxSplit && pairs * 2 * s < target && K % (16LL * s * 2) == 0 && K / (s * 2) >= 64) s *= 2;
  Split sp;
  sp.in_block = std::min(s, kMaxWarpSplit);
  sp.blocks = s / sp.in_block;
  return sp;
}

// Partial sums of one block: 2 tiles x 16 features x rows, and the rows' sums of squares.
constexpr int64_t kBlockFloats = 2 * 16 * kMaxRows + kMaxRows;

struct Args {
  const bf16* w;
  int32_t N, K, M;
  GemvInput in;
  GemvOutput out;
  float* ws;
  int32_t* counters;
};

__device__ __forceinline__ uint4 ldg16(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ uint2 ldg8(const void* p) { return __ldg(reinterpret_cast<const uint2*>(p)); }
// Weights' 8-byte tail loads (volatile, as ldw16 in gemv_common.h).
__device__ __forceinline__ uint2 ldw8(const void* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

__device__ __forceinline__ uint32_t word(const uint4& a, const uint4& b, int i) {
  const uint4& v = i < 4 ? a : b;
  switch (i & 3) {
    case 0: return v.x;
    case 1: return v.y;
    case 2: return v.z;
    default: return v.w;
  }
}

// The two tiles of pair p: features base..base+15 and base+off..base+off+15.
template <GemvEpilogue kOut>
__device__ __forceinline__ void pair_features(const Args& a, int p, int& base, int& off) {
  if constexpr (kOut == GemvEpilogue::kSwiglu) {
    base = 16 * p;
    off = a.N / 2;
  } else if constexpr (kOut == GemvEpilogue::kQkvRope) {
    const int d = a.out.kv.head_dim, per_head = d / 32;
    base = (p / per_head) * d + 16 * (p % per_head);
    off = d / 2;
  } else {
    base = 32 * p;
    off = 16;
  }
}

// Lane t's 16 activation values of one row in the chunk at k (elements
// 8t.. and 32+8t.., as packed bf16 pairs), and with normalisation their sum
// of squares.
template <bool kNorm>
__device__ __forceinline__ void load_x16(const Args& a, int64_t row, bool valid, int k, int t,
                                         uint32_t (&xw)[8], float& ss) {
  if (!valid) {
#pragma unroll
    for (int i = 0; i < 8; ++i) xw[i] = 0;
    return;
  }
  if constexpr (kNorm) {
    const float* xr = a.in.x_norm + row * a.K + k + 8 * t;
    const float* nr = a.in.norm_weight + k + 8 * t;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = (i / 2) * 32 + (i % 2) * 4;  // 0, 4, 32, 36
      const float4 x = __ldg(reinterpret_cast<const float4*>(xr + e)),
                   n = __ldg(reinterpret_cast<const float4*>(nr + e));
      ss += x.x * x.x + x.y * x.y + x.z * x.z + x.w * x.w;
      xw[2 * i] = pack_bf16(x.x * n.x, x.y * n.y);
      xw[2 * i + 1] = pack_bf16(x.z * n.z, x.w * n.w);
    }
  } else {
    const bf16* xp = a.in.x + row * a.K + k + 8 * t;
    const uint4 lo = ldg16(xp), hi = ldg16(xp + 32);
#pragma unroll
    for (int i = 0; i < 8; ++i) xw[i] = word(lo, hi, i);
  }
}

// 4 values at k: two bf16 words.
template <bool kNorm>
__device__ __forceinline__ void load_x4(const Args& a, int64_t row, bool valid, int k,
                                        uint32_t (&xw)[2], float& ss) {
  if (!valid) {
    xw[0] = xw[1] = 0;
    return;
  }
  if constexpr (kNorm) {
    const float4 x = __ldg(reinterpret_cast<const float4*>(a.in.x_norm + row * a.K + k));
    const float4 n = __ldg(reinterpret_cast<const float4*>(a.in.norm_weight + k));
    ss += x.x * x.x + x.y * x.y + x.z * x.z + x.w * x.w;
    xw[0] = pack_bf16(x.x * n.x, x.y * n.y);
    xw[1] = pack_bf16(x.z * n.z, x.w * n.w);
  } else {
    const uint2 v = ldg8(a.in.x + row * a.K + k);
    xw[0] = v.x;
    xw[1] = v.y;
  }
}

// Registers per thread. One row (the decode path): 128, so that two blocks of
// 256 threads fit an SM; and for SwiGLU 96 (with a ring two chunks deep), so
// that 5 blocks of 128 fit and an FFN of 560 pairs (Qwen2.5-1.5B) runs in one
// wave of 132 SMs, not 1.06 waves at 4 per SM (measured on the H100: no
// faster, 29.5 us against 27-30 before; see docs/cuda.md). More rows: as
// many as needed.
template <int NT, GemvEpilogue kOut>
constexpr int kMaxRegs = NT > 1 ? 255 : kOut == GemvEpilogue::kSwiglu ? 96 : 128;

template <int NT, bool kNorm, GemvEpilogue kOut>
__global__ void __maxnreg__((kMaxRegs<NT, kOut>)) gemv_kernel(Args a) {
  constexpr int R = 8 * NT;
  __shared__ float part[kMaxWarpSplit][2][16][R];
  __shared__ float sq[kMaxWarpSplit][R];
  __shared__ bool last;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int tile = warp & 1, ks = warp >> 1, in_block = blockDim.x / 64;
  const int pair = blockIdx.x, kb = blockIdx.y, n_kb = gridDim.y;
  pdl_release();
  int base, off;
  pair_features<kOut>(a, pair, base, off);
  const int f = base + (tile ? off : 0);
  const int slice = a.K / (in_block * n_kb);
  const int k0 = (kb * in_block + ks) * slice, k1 = k0 + slice;

  const bf16* w0 = a.w + static_cast<int64_t>(f + g) * a.K;
  const bf16* w1 = w0 + 8LL * a.K;

  // The slice: 64-wide chunks, then up to three 16-wide steps. Chunk loads
  // run kDepth ahead of the compute, so a lane has up to kDepth x 64 bytes of
  // weights in flight; the steps' loads go out with the last chunks'.
  constexpr int kDepth = kMaxRegs<NT, kOut> < 128 ? 2 : 3;
  const int n_chunks = (k1 - k0) / 64, k_tail = k0 + 64 * n_chunks, n_tail = (k1 - k_tail) / 16;
  auto load_chunk = [&](int k, uint4 (&q)[4]) {
    q[0] = ldw16(w0 + k + 8 * t);
    q[1] = ldw16(w0 + k + 32 + 8 * t);
    q[2] = ldw16(w1 + k + 8 * t);
    q[3] = ldw16(w1 + k + 32 + 8 * t);
  };
  uint2 tail[3][2];
  auto load_tail = [&] {
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      if (j < n_tail) {
        tail[j][0] = ldw8(w0 + k_tail + 16 * j + 4 * t);
        tail[j][1] = ldw8(w1 + k_tail + 16 * j + 4 * t);
      }
    }
  };
  // Weights only until pdl_wait: the previous kernel may still be writing
  // the activations, the workspace and the counters.
  uint4 ring[kDepth][4];
#pragma unroll
  for (int j = 0; j < kDepth; ++j) {
    if (j < n_chunks) load_chunk(k0 + 64 * j, ring[j]);
  }
  if (n_chunks < kDepth) load_tail();
  pdl_wait();

  int64_t src[NT];
  bool valid[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int r = nt * 8 + g;
    valid[nt] = r < a.M;
    src[nt] = valid[nt] ? (a.in.rows != nullptr ? a.in.rows[r] : r) : 0;
  }
  float acc[NT][4] = {};
  float ss[NT] = {};
  auto compute_chunk = [&](int k, const uint4 (&q)[4]) {
    uint32_t xw[NT][8];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) load_x16<kNorm>(a, src[nt], valid[nt], k, t, xw[nt], ss[nt]);
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint32_t af[4] = {word(q[0], q[1], 2 * s), word(q[2], q[3], 2 * s),
                              word(q[0], q[1], 2 * s + 1), word(q[2], q[3], 2 * s + 1)};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) mma_bf16(acc[nt], af, xw[nt][2 * s], xw[nt][2 * s + 1]);
    }
  };
  // Chunk c sits in ring slot c % kDepth; the loop is unrolled by kDepth so
  // that every slot index is a constant (registers, not local memory).
  for (int c0 = 0; c0 < n_chunks; c0 += kDepth) {
#pragma unroll
    for (int j = 0; j < kDepth; ++j) {
      const int c = c0 + j;
      if (c < n_chunks) {
        compute_chunk(k0 + 64 * c, ring[j]);
        if (c + kDepth < n_chunks) {
          load_chunk(k0 + 64 * (c + kDepth), ring[j]);
        } else if (c + kDepth == n_chunks) {
          load_tail();
        }
      }
    }
  }
  // The 16-wide steps: lane (g, t) takes elements 4t..4t+3.
#pragma unroll
  for (int j = 0; j < 3; ++j) {
    if (j < n_tail) {
      const uint32_t af[4] = {tail[j][0].x, tail[j][1].x, tail[j][0].y, tail[j][1].y};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        uint32_t xw[2];
        load_x4<kNorm>(a, src[nt], valid[nt], k_tail + 16 * j + 4 * t, xw, ss[nt]);
        mma_bf16(acc[nt], af, xw[0], xw[1]);
      }
    }
  }

  // The block's slices meet in shared memory, summed in slice order.
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    part[ks][tile][g][nt * 8 + 2 * t] = acc[nt][0];
    part[ks][tile][g][nt * 8 + 2 * t + 1] = acc[nt][1];
    part[ks][tile][g + 8][nt * 8 + 2 * t] = acc[nt][2];
    part[ks][tile][g + 8][nt * 8 + 2 * t + 1] = acc[nt][3];
    if constexpr (kNorm) {
      float v = ss[nt];
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      v += __shfl_xor_sync(0xffffffffu, v, 2);
      if (tile == 0 && t == 0) sq[ks][nt * 8 + g] = v;
    }
  }
  __syncthreads();
  float* flat = &part[0][0][0][0];
  for (int e = threadIdx.x; e < 2 * 16 * R; e += blockDim.x) {
    float v = flat[e];
    for (int j = 1; j < in_block; ++j) v += (&part[j][0][0][0])[e];
    flat[e] = v;
  }
  if constexpr (kNorm) {
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
      float v = sq[0][r];
      for (int j = 1; j < in_block; ++j) v += sq[j][r];
      sq[0][r] = v;
    }
  }
  __syncthreads();

  // Blocks that split K: each leaves its sums in the workspace; the last of
  // the pair adds them all up in block order.
  if (n_kb > 1) {
    float* mine = a.ws + (static_cast<int64_t>(pair) * n_kb + kb) * kBlockFloats;
    for (int e = threadIdx.x; e < 2 * 16 * R; e += blockDim.x) mine[e] = flat[e];
    if constexpr (kNorm) {
      for (int r = threadIdx.x; r < R; r += blockDim.x) mine[2 * 16 * R + r] = sq[0][r];
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      last = atomicAdd(a.counters + pair, 1) == n_kb - 1;
      if (last) a.counters[pair] = 0;  // ready for the next launch
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float* all = a.ws + static_cast<int64_t>(pair) * n_kb * kBlockFloats;
    for (int e = threadIdx.x; e < 2 * 16 * R; e += blockDim.x) {
      float v = __ldcg(all + e);
      for (int j = 1; j < n_kb; ++j) v += __ldcg(all + j * kBlockFloats + e);
      flat[e] = v;
    }
    if constexpr (kNorm) {
      for (int r = threadIdx.x; r < R; r += blockDim.x) {
        float v = __ldcg(all + 2 * 16 * R + r);
        for (int j = 1; j < n_kb; ++j) v += __ldcg(all + j * kBlockFloats + 2 * 16 * R + r);
        sq[0][r] = v;
      }
    }
    __syncthreads();
  }

  // Each row's RMSNorm scale, once per row.
  if constexpr (kNorm) {
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
      sq[0][r] = rsqrtf(sq[0][r] / static_cast<float>(a.K) + a.in.eps);
    }
    __syncthreads();
  }
  // Epilogue; i (the feature in a tile) runs fastest so that writes coalesce.
  auto scale = [&](int r) {
    if constexpr (kNorm) return sq[0][r];
    return 1.0f;
  };
  if constexpr (kOut == GemvEpilogue::kStore || kOut == GemvEpilogue::kAdd) {
    for (int e = threadIdx.x; e < 2 * 16 * R; e += blockDim.x) {
      const int i = e % 16, tl = (e / 16) % 2, r = e / 32;
      if (r >= a.M) continue;
      const float v = part[0][tl][i][r] * scale(r);
      const int64_t row = a.out.rows != nullptr ? a.out.rows[r] : r;
      float* y = a.out.y + row * a.out.y_ld + base + tl * off + i;
      if constexpr (kOut == GemvEpilogue::kAdd) {
        *y += v;
      } else {
        *y = v;
      }
    }
  } else if constexpr (kOut == GemvEpilogue::kSwiglu) {
    const int ff = a.N / 2;
    for (int e = threadIdx.x; e < 16 * R; e += blockDim.x) {
      const int i = e % 16, r = e / 16;
      if (r >= a.M) continue;
      const float sc = scale(r), gt = part[0][0][i][r] * sc, up = part[0][1][i][r] * sc;
      a.out.act[static_cast<int64_t>(r) * ff + base + i] = __float2bfloat16(gt / (1.0f + __expf(-gt)) * up);
    }
  } else {  // kQkvRope
    for (int e = threadIdx.x; e < 16 * R; e += blockDim.x) {
      const int i = e % 16, r = e / 16;
      if (r >= a.M) continue;
      const float sc = scale(r);
      gemv_qkv_rope_pair(a.out, a.N, r, base + i, part[0][0][i][r] * sc, part[0][1][i][r] * sc);
    }
  }
}

template <int NT>
void launch(const Args& a, dim3 grid, int threads, cudaStream_t stream) {
  gemv_dispatch(a.in, a.out, [&](auto norm, auto epilogue) {
    launch_pdl(gemv_kernel<NT, decltype(norm)::value, decltype(epilogue)::value>, grid, dim3(threads), 0, stream, a);
  });
}

[[noreturn]] void gemv_fail(const char* what) {
  std::fprintf(stderr, "gemv_bf16: %s\n", what);
  std::abort();
}

}  // namespace

bool gemv_supports(int64_t N, int64_t K, GemvEpilogue epilogue, int32_t head_dim) {
  if (N <= 0 || K <= 0 || N % 32 != 0 || K % 16 != 0) return false;
  if (N > (1LL << 30) || K > (1LL << 30)) return false;
  if (epilogue == GemvEpilogue::kQkvRope) return head_dim > 0 && head_dim % 32 == 0 && N % head_dim == 0;
  return true;
}

int64_t gemv_workspace_floats(int64_t N, int64_t K, int32_t sm_count) {
  const Split sp = plan_split(N, K, sm_count);
  return sp.blocks > 1 ? N / 32 * sp.blocks * kBlockFloats : 0;
}

void gemv_bf16(const bf16* w, int64_t N, int64_t K, const GemvInput& in, const GemvOutput& out,
               int64_t M, const GemvScratch& scratch, int32_t sm_count, cudaStream_t stream) {
  if (M == 0) return;
  if (!gemv_supports(N, K, out.epilogue, out.kv.head_dim)) gemv_fail("unsupported shape");
  if ((in.x == nullptr) == (in.x_norm == nullptr)) gemv_fail("give exactly one of x and x_norm");
  const Split sp = plan_split(N, K, sm_count);
  if (sp.blocks > 1 && (scratch.workspace_floats < gemv_workspace_floats(N, K, sm_count) ||
                        scratch.n_counters < gemv_counters(N))) {
    gemv_fail("scratch too small for this shape");
  }
  Args a{w, static_cast<int32_t>(N), static_cast<int32_t>(K), 0, in, out, scratch.workspace, scratch.counters};
  const dim3 grid(static_cast<unsigned>(N / 32), static_cast<unsigned>(sp.blocks));
  const int threads = 64 * sp.in_block;
  for (int64_t r0 = 0; r0 < M; r0 += kMaxRows) {
    a.M = static_cast<int32_t>(std::min<int64_t>(kMaxRows, M - r0));
    a.in = gemv_input_from(in, r0, K);
    a.out = gemv_output_from(out, r0, N);
    switch ((a.M + 7) / 8) {
      case 1: launch<1>(a, grid, threads, stream); break;
      case 2: launch<2>(a, grid, threads, stream); break;
      case 3: launch<3>(a, grid, threads, stream); break;
      default: launch<4>(a, grid, threads, stream); break;
    }
    LAGSERVE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace lagserve::kernels::cuda
