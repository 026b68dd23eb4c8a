// gemv_stream_bf16: y[r, n] = sum_k a[r, k] * w[n, k] for a few rows, on CUDA
// cores, with gemv_bf16's fused inputs and epilogues (kernels/cuda/gemv.h).
//
// A block is 4 warps. A warp owns a pair of output features (see
// pair_features) and one of S slices of K (S = 1, 2 or 4, from the shape and
// the GPU only): lane l reads elements 8l..8l+7 of each 256-element span of
// both weight rows, so each load instruction takes 512 contiguous bytes of a
// row, and up to 8 spans per row (16 loads of 16 bytes a lane) are in flight
// before the first is used; 12 for a single row whose slice is longer (the
// FFN down projection), so that its weights come in one round of loads. The
// sum order of an output: per lane in span order, the lanes by a butterfly,
// the slices in slice order. It depends on N, K and the SM count only, never
// on the rows beside a row.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/gemv_common.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;     // per block
constexpr int kSpan = 256;    // elements of a row a warp reads with one load instruction
constexpr int kGroup = 8;     // spans in flight per row (kWideGroup for one row and longer slices)
constexpr int kWideGroup = 12;
constexpr int kMaxRows = 8;   // rows per launch

struct Args {
  const bf16* w;
  int32_t N, K, M, slices;
  GemvInput in;
  GemvOutput out;
};

// Slices of K: more while the warps number under 16 per SM and a slice keeps
// at least two spans. Depends on the shape and the GPU only.
int plan_slices(int64_t N, int64_t K, int32_t sm_count) {
  const int64_t pairs = N / 2;
  int s = 1;
  while (s < kWarps && pairs * s < 16LL * sm_count && (K / 8) % (2 * s) == 0 && K / (2 * s) >= 2 * kSpan) s *= 2;
  return s;
}

// 8 bf16 (4 words, low half first) as floats.
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[8]) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16(x)); }

// The two features of pair p: consecutive ones; gate p and up p (SwiGLU);
// element i and i + head_dim/2 of a head (RoPE).
template <GemvEpilogue kOut>
__device__ __forceinline__ void pair_features(const Args& a, int p, int& f0, int& f1) {
  if constexpr (kOut == GemvEpilogue::kSwiglu) {
    f0 = p;
    f1 = a.N / 2 + p;
  } else if constexpr (kOut == GemvEpilogue::kQkvRope) {
    const int half = a.out.kv.head_dim / 2;
    f0 = (p / half) * 2 * half + p % half;
    f1 = f0 + half;
  } else {
    f0 = 2 * p;
    f1 = 2 * p + 1;
  }
}

template <int R, int kG, bool kNorm, GemvEpilogue kOut>
__global__ void __launch_bounds__(32 * kWarps) gemv_stream_kernel(Args a) {
  __shared__ float part[kWarps][2][R];
  __shared__ float sq[kWarps][R];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int S = a.slices, ks = warp % S, P = kWarps / S;
  pdl_release();
  int f0, f1;
  pair_features<kOut>(a, blockIdx.x * P + warp / S, f0, f1);
  const int slice = a.K / S, k0 = ks * slice + 8 * lane, k1 = (ks + 1) * slice;
  const bf16* w0 = a.w + static_cast<int64_t>(f0) * a.K;
  const bf16* w1 = a.w + static_cast<int64_t>(f1) * a.K;
  const int n_groups = (slice + kG * kSpan - 1) / (kG * kSpan);

  uint4 q[kG][2];
  auto load = [&](int g) {
#pragma unroll
    for (int j = 0; j < kG; ++j) {
      const int k = k0 + (g * kG + j) * kSpan;
      if (k < k1) {
        q[j][0] = ldw16(w0 + k);
        q[j][1] = ldw16(w1 + k);
      }
    }
  };
  // Weights only until pdl_wait: the previous kernel may still be writing
  // the activations.
  load(0);
  pdl_wait();

  int64_t src[R];
#pragma unroll
  for (int r = 0; r < R; ++r) src[r] = r < a.M ? (a.in.rows != nullptr ? a.in.rows[r] : r) : 0;
  float acc[R][2] = {};
  float ss[R] = {};
  for (int g = 0; g < n_groups; ++g) {
    if (g > 0) load(g);
#pragma unroll
    for (int j = 0; j < kG; ++j) {
      const int k = k0 + (g * kG + j) * kSpan;
      if (k >= k1) continue;
      float wa[8], wb[8], nw[8];
      unpack8(q[j][0], wa);
      unpack8(q[j][1], wb);
      if constexpr (kNorm) {
        const float4 n0 = __ldg(reinterpret_cast<const float4*>(a.in.norm_weight + k)),
                     n1 = __ldg(reinterpret_cast<const float4*>(a.in.norm_weight + k + 4));
        const float n[8] = {n0.x, n0.y, n0.z, n0.w, n1.x, n1.y, n1.z, n1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i) nw[i] = n[i];
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= a.M) continue;
        float xv[8];
        if constexpr (kNorm) {
          const float* xr = a.in.x_norm + src[r] * a.K + k;
          const float4 x0 = __ldg(reinterpret_cast<const float4*>(xr)),
                       x1 = __ldg(reinterpret_cast<const float4*>(xr + 4));
          const float x[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            ss[r] = fmaf(x[i], x[i], ss[r]);
            xv[i] = round_bf16(x[i] * nw[i]);
          }
        } else {
          unpack8(__ldg(reinterpret_cast<const uint4*>(a.in.x + src[r] * a.K + k)), xv);
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          acc[r][0] = fmaf(wa[i], xv[i], acc[r][0]);
          acc[r][1] = fmaf(wb[i], xv[i], acc[r][1]);
        }
      }
    }
  }

  // The warp's sums (every lane ends with the same bits), then the slices
  // meet in shared memory.
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      acc[r][0] += __shfl_xor_sync(0xffffffffu, acc[r][0], o);
      acc[r][1] += __shfl_xor_sync(0xffffffffu, acc[r][1], o);
      if constexpr (kNorm) ss[r] += __shfl_xor_sync(0xffffffffu, ss[r], o);
    }
    if (lane == 0) {
      part[warp][0][r] = acc[r][0];
      part[warp][1][r] = acc[r][1];
      sq[warp][r] = ss[r];
    }
  }
  __syncthreads();

  // Epilogue: one thread per (pair, row).
  for (int e = threadIdx.x; e < P * R; e += blockDim.x) {
    const int pl = e / R, r = e % R;
    if (r >= a.M) continue;
    float v0 = part[pl * S][0][r], v1 = part[pl * S][1][r], s2 = sq[pl * S][r];
    for (int s = 1; s < S; ++s) {
      v0 += part[pl * S + s][0][r];
      v1 += part[pl * S + s][1][r];
      s2 += sq[pl * S + s][r];
    }
    if constexpr (kNorm) {
      const float sc = rsqrtf(s2 / static_cast<float>(a.K) + a.in.eps);
      v0 *= sc;
      v1 *= sc;
    }
    const int p = blockIdx.x * P + pl;
    int g0, g1;
    pair_features<kOut>(a, p, g0, g1);
    if constexpr (kOut == GemvEpilogue::kStore || kOut == GemvEpilogue::kAdd) {
      const int64_t row = a.out.rows != nullptr ? a.out.rows[r] : r;
      float* y = a.out.y + row * a.out.y_ld;
      if constexpr (kOut == GemvEpilogue::kAdd) {
        y[g0] += v0;
        y[g1] += v1;
      } else {
        y[g0] = v0;
        y[g1] = v1;
      }
    } else if constexpr (kOut == GemvEpilogue::kSwiglu) {
      a.out.act[static_cast<int64_t>(r) * (a.N / 2) + p] = __float2bfloat16(v0 / (1.0f + __expf(-v0)) * v1);
    } else {  // kQkvRope
      gemv_qkv_rope_pair(a.out, a.N, r, g0, v0, v1);
    }
  }
}

template <int R, int kG = kGroup>
void launch(const Args& a, dim3 grid, cudaStream_t stream) {
  gemv_dispatch(a.in, a.out, [&](auto norm, auto epilogue) {
    launch_pdl(gemv_stream_kernel<R, kG, decltype(norm)::value, decltype(epilogue)::value>, grid,
               dim3(32 * kWarps), 0, stream, a);
  });
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "gemv_stream_bf16: %s\n", what);
  std::abort();
}

}  // namespace

bool gemv_stream_supports(int64_t N, int64_t K, GemvEpilogue epilogue, int32_t head_dim) {
  if (N <= 0 || K <= 0 || N % 8 != 0 || K % 8 != 0) return false;
  if (N > (1LL << 30) || K > (1LL << 30)) return false;
  if (epilogue == GemvEpilogue::kQkvRope) return head_dim > 0 && head_dim % 2 == 0 && N % head_dim == 0;
  return true;
}

void gemv_stream_bf16(const bf16* w, int64_t N, int64_t K, const GemvInput& in, const GemvOutput& out,
                      int64_t M, int32_t sm_count, cudaStream_t stream) {
  if (M == 0) return;
  if (!gemv_stream_supports(N, K, out.epilogue, out.kv.head_dim)) fail("unsupported shape");
  if ((in.x == nullptr) == (in.x_norm == nullptr)) fail("give exactly one of x and x_norm");
  const int S = plan_slices(N, K, sm_count);
  Args a{w, static_cast<int32_t>(N), static_cast<int32_t>(K), 0, S, in, out};
  const dim3 grid(static_cast<unsigned>(N / 2 / (kWarps / S)));
  const int64_t spans = (K / S + kSpan - 1) / kSpan;  // per slice
  for (int64_t r0 = 0; r0 < M; r0 += kMaxRows) {
    a.M = static_cast<int32_t>(std::min<int64_t>(kMaxRows, M - r0));
    a.in = gemv_input_from(in, r0, K);
    a.out = gemv_output_from(out, r0, N);
    if (a.M == 1 && spans > kGroup) {
      // One round of loads, where a single row leaves the registers for it.
      launch<1, kWideGroup>(a, grid, stream);
    } else if (a.M == 1) {
      launch<1>(a, grid, stream);
    } else if (a.M == 2) {
      launch<2>(a, grid, stream);
    } else if (a.M <= 4) {
      launch<4>(a, grid, stream);
    } else {
      launch<8>(a, grid, stream);
    }
    LAGSERVE_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace lagserve::kernels::cuda
