// gemm_rows_bf16 (kernels/cuda/gemm_rows.h).
//
// The work is the weights in units of 16 features x 64 of K ("units", tile
// by tile, K fastest). A launch has one block per SM (fewer for narrow
// shapes); block b owns tiles [b T / B, (b + 1) T / B), and its 8 warps take
// equal runs of its units, so every SM streams the same bytes within a tile.
// A lane's weights go straight to registers as an mma A fragment (rows g and
// g + 8 of the tile; within a 64-wide unit, elements 8t..8t+7 and
// 32+8t..32+8t+7, the order gemv.cu uses), kDepth units ahead of the mma.
// The rows are staged once per block in shared memory (bf16, all of K) and
// read as B fragments in the same element order.
//
// A tile that one warp covers whole is written from its registers. A tile
// that several warps share (a run starts or ends inside it) leaves each
// warp's part in shared memory, and the block adds the parts in warp order
// at the end. So the sum order of an output depends on N, K and the grid only.
#include "kernels/cuda/gemm_rows.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv_common.h"
#include "kernels/cuda/mma_sm80.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 32;     // rows per launch: 4 n8 tiles of the mma
constexpr int kUnitK = 64;    // K of a unit
constexpr int kDepth = 8;     // units of weights in flight per warp (16 KB; 128 KB an SM)
constexpr int kMaxK = 2048;
// bf16 of padding after each staged row (64 bytes): rows g and g + 1, read
// in the same load phase, land in different halves of the banks.
constexpr int kPad = 32;

// A part: [16 features][kRows rows, padded to kPartLd] (no bank conflicts
// between the features a warp writes at once).
constexpr int kPartLd = kRows + 1;

constexpr size_t smem_bytes(int64_t K) {
  return static_cast<size_t>(kRows) * (K + kPad) * sizeof(bf16) +
         static_cast<size_t>(kWarps) * 2 * 16 * kPartLd * sizeof(float);
}

struct Work {
  const bf16* a;
  int64_t lda;
  const bf16* w;
  float* y;
  int64_t ldy;
  int32_t M, N, K;
};

__device__ __forceinline__ int32_t tile_begin(int64_t block, int32_t n_tiles, int32_t n_blocks) {
  return static_cast<int32_t>(block * n_tiles / n_blocks);
}
// First unit of warp w's run in a block of n_units.
__device__ __forceinline__ int32_t run_begin(int32_t w, int32_t n_units) {
  return static_cast<int32_t>(static_cast<int64_t>(w) * n_units / kWarps);
}

template <bool kAdd>
__device__ __forceinline__ void put(float* y, float v) {
  if constexpr (kAdd) {
    *y += v;
  } else {
    *y = v;
  }
}

template <bool kAdd>
__global__ void __launch_bounds__(kThreads, 1) gemm_rows_kernel(Work p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int32_t ld_s = p.K + kPad;
  bf16* const a_s = reinterpret_cast<bf16*>(smem);
  // Shared tiles' parts: [warp][first or last tile of its run][feature][row].
  float* const part_s = reinterpret_cast<float*>(smem + static_cast<size_t>(kRows) * ld_s * sizeof(bf16));
  pdl_release();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int32_t C = p.K / kUnitK, n_tiles = p.N / 16;
  const int32_t tb = tile_begin(blockIdx.x, n_tiles, gridDim.x);
  const int32_t U = (tile_begin(blockIdx.x + 1LL, n_tiles, gridDim.x) - tb) * C;
  const int32_t u0 = run_begin(warp, U), u1 = run_begin(warp + 1, U);

  const int32_t n = u1 - u0;  // units of this warp's run
  // The run's units are loaded in order: lw points at the next one's
  // elements of row g (row g + 8 is 8 K further), lc is its unit in its tile.
  int32_t lc = u0 % C;
  const bf16* lw = p.w + (static_cast<int64_t>(tb + u0 / C) * 16 + g) * p.K + lc * kUnitK + 8 * t;
  const int64_t next_tile = 16LL * p.K - static_cast<int64_t>(C - 1) * kUnitK;
  auto load_next = [&](uint4 (&q)[4]) {
    q[0] = ldw16(lw);
    q[1] = ldw16(lw + 32);
    q[2] = ldw16(lw + 8LL * p.K);
    q[3] = ldw16(lw + 8LL * p.K + 32);
    if (++lc == C) {
      lc = 0;
      lw += next_tile;
    } else {
      lw += kUnitK;
    }
  };
  // Weights only until pdl_wait: the kernel before may still be writing the rows.
  uint4 ring[kDepth][4];
#pragma unroll
  for (int j = 0; j < kDepth; ++j) {
    if (j < n) load_next(ring[j]);
  }
  pdl_wait();
  {
    const int32_t per_row = p.K / 8;  // 16-byte pieces
    for (int32_t i = threadIdx.x; i < kRows * per_row; i += kThreads) {
      const int32_t r = i / per_row, c = i % per_row;
      const bool valid = r < p.M;  // rows past M: zeros
      cp_async16(smem_u32(a_s + r * ld_s + 8 * c), p.a + (valid ? r * p.lda + 8 * c : 0), valid);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
  }

  float acc[4][4];
  auto clear = [&] {
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  };
  // The run's sums of block tile tl so far: to y if the run holds all of
  // it, else to its part slot. acc[nt][e]: feature g (+8 for e >= 2), row
  // nt * 8 + 2t + (e & 1).
  auto flush = [&](int32_t tl) {
    if (tl * C >= u0 && (tl + 1) * C <= u1) {
      float* const y = p.y + static_cast<int64_t>(tb + tl) * 16 + g;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = nt * 8 + 2 * t + (e & 1);
          if (r < p.M) put<kAdd>(y + r * p.ldy + (e >= 2 ? 8 : 0), acc[nt][e]);
        }
      }
    } else {
      float* const dst = part_s + (warp * 2 + (tl == u0 / C ? 0 : 1)) * 16 * kPartLd;
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) dst[(g + (e >= 2 ? 8 : 0)) * kPartLd + nt * 8 + 2 * t + (e & 1)] = acc[nt][e];
      }
    }
  };

  clear();
  // The unit being computed: unit cc of block tile ct.
  int32_t ct = u0 / C, cc = u0 % C;
  // The run's i-th unit sits in ring slot i % kDepth; unrolled by kDepth so
  // that every slot index is a constant (registers, not local memory).
  for (int32_t i0 = 0; i0 < n; i0 += kDepth) {
#pragma unroll
    for (int j = 0; j < kDepth; ++j) {
      const int32_t i = i0 + j;
      if (i < n) {
        const int32_t k = cc * kUnitK + 8 * t;
        uint32_t xw[4][8];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const bf16* ar = a_s + (nt * 8 + g) * ld_s + k;
          const uint4 lo = *reinterpret_cast<const uint4*>(ar), hi = *reinterpret_cast<const uint4*>(ar + 32);
#pragma unroll
          for (int i = 0; i < 8; ++i) xw[nt][i] = word(lo, hi, i);
        }
        const uint4(&q)[4] = ring[j];
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const uint32_t af[4] = {word(q[0], q[1], 2 * s), word(q[2], q[3], 2 * s), word(q[0], q[1], 2 * s + 1),
                                  word(q[2], q[3], 2 * s + 1)};
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) mma_bf16(acc[nt], af, xw[nt][2 * s], xw[nt][2 * s + 1]);
        }
        if (i + kDepth < n) load_next(ring[j]);
        if (++cc == C || i + 1 == n) {
          flush(ct);
          clear();
          if (cc == C) cc = 0, ++ct;
        }
      }
    }
  }

  // Tiles that runs share: each once, at the first run boundary inside it,
  // its parts added in warp order.
  __syncthreads();
  for (int i = 1; i < kWarps; ++i) {
    const int32_t b = run_begin(i, U);
    if (b % C == 0) continue;  // not inside a tile
    const int32_t tl = b / C;
    const int32_t prev = run_begin(i - 1, U);
    if (i > 1 && prev % C != 0 && prev / C == tl) continue;  // counted at an earlier boundary
    for (int e = threadIdx.x; e < 16 * kRows; e += kThreads) {
      const int feature = e % 16, r = e / 16;  // features fastest: y's stores coalesce
      float sum = 0.f;
      for (int w = 0; w < kWarps; ++w) {
        const int32_t a0 = run_begin(w, U), a1 = run_begin(w + 1, U);
        if (a0 >= a1 || a1 <= tl * C || a0 >= (tl + 1) * C) continue;  // none of tile tl
        sum += part_s[((w * 2 + (tl == a0 / C ? 0 : 1)) * 16 + feature) * kPartLd + r];
      }
      if (r < p.M) put<kAdd>(p.y + r * p.ldy + static_cast<int64_t>(tb + tl) * 16 + feature, sum);
    }
  }
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "gemm_rows_bf16: %s\n", what);
  std::abort();
}

// Per device (tensor parallelism runs a thread per GPU in one process): the
// most dynamic shared memory a block may have, and what each kernel has
// been allowed so far.
struct DeviceSmem {
  int optin = 0;
  size_t allowed[2] = {0, 0};  // gemm_rows_kernel<false>, <true>
};

DeviceSmem& device_smem(std::unique_lock<std::mutex>& lock) {
  static std::mutex mu;
  static std::map<int, DeviceSmem> by_device;
  lock = std::unique_lock<std::mutex>(mu);
  int device = 0;
  LAGSERVE_CUDA_CHECK(cudaGetDevice(&device));
  DeviceSmem& d = by_device[device];
  if (d.optin == 0) {
    LAGSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&d.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  }
  return d;
}

template <bool kAdd>
void launch(const Work& p, int32_t grid, cudaStream_t stream) {
  const size_t smem = smem_bytes(p.K);
  {
    std::unique_lock<std::mutex> lock;
    DeviceSmem& d = device_smem(lock);
    if (d.allowed[kAdd] < smem) {  // more than 48 KiB needs the kernel's opt-in, on each device
      LAGSERVE_CUDA_CHECK(cudaFuncSetAttribute(gemm_rows_kernel<kAdd>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem)));
      d.allowed[kAdd] = smem;
    }
  }
  launch_pdl(gemm_rows_kernel<kAdd>, dim3(grid), dim3(kThreads), smem, stream, p);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool gemm_rows_supports(int64_t N, int64_t K) {
  if (N <= 0 || K <= 0 || N % 16 != 0 || K % kUnitK != 0 || K > kMaxK || N > (1LL << 24)) return false;
  std::unique_lock<std::mutex> lock;
  return smem_bytes(K) <= static_cast<size_t>(device_smem(lock).optin);
}

void gemm_rows_bf16(const bf16* a, int64_t lda, const bf16* w, float* y, int64_t ldy, int64_t M,
                    int64_t N, int64_t K, bool add, int32_t sm_count, cudaStream_t stream) {
  if (M <= 0) return;
  if (!gemm_rows_supports(N, K)) fail("unsupported shape");
  if (lda < K || lda % 8 != 0 || reinterpret_cast<uintptr_t>(a) % 16 != 0 || reinterpret_cast<uintptr_t>(w) % 16 != 0) {
    fail("rows and weights must be 16-byte aligned, lda >= K and a multiple of 8");
  }
  if (ldy < N) fail("ldy < N");
  const int32_t grid = static_cast<int32_t>(std::min<int64_t>(std::max(sm_count, 1), N / 16));
  for (int64_t r0 = 0; r0 < M; r0 += kRows) {
    const Work p{a + r0 * lda, lda, w, y + r0 * ldy, ldy, static_cast<int32_t>(std::min<int64_t>(kRows, M - r0)),
                 static_cast<int32_t>(N), static_cast<int32_t>(K)};
    if (add) {
      launch<true>(p, grid, stream);
    } else {
      launch<false>(p, grid, stream);
    }
  }
}

}  // namespace lagserve::kernels::cuda
