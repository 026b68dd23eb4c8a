// prefill_attention: FA2-style flash attention over the paged bf16 cache.
// One CTA = 128 queries of one head, 4 warps x 32 rows (two m16 tiles each);
// K/V tiles of 64 keys are gathered through the block table with cp.async
// (double-buffered, XOR-swizzled shared memory), S = Q K^T and O += P V run on
// mma.sync m16n8k16 (bf16 in, fp32 accumulate), the scores stay in registers.
#include "kernels/cuda/prefill_attention.h"

#include <cstdio>
#include <cstdlib>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mma_sm80.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMTiles = 2;  // m16 tiles per warp: K/V fragments serve both
constexpr int kRowsPerWarp = kMTiles * 16;
constexpr int kBlockM = kWarps * kRowsPerWarp;  // queries per CTA
constexpr int kBlockN = 64;                     // keys per tile
constexpr int kNTiles = kBlockN / 8;            // n8 tiles of S per m16 tile
constexpr int kKeyGroups = kBlockN / 16;        // 16 keys always lie in one cache block
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kNeverHidden = 0x7fffffff;

template <int D>
constexpr size_t smem_bytes() {  // Q [kBlockM, D], K and V [2][kBlockN, D]
  return static_cast<size_t>(kBlockM + 4 * kBlockN) * D * sizeof(bf16);
}

// Fragment layouts (PTX ISA, mma.m16n8k16): with g = lane / 4, t = lane % 4,
// an accumulator c[0..3] holds rows g (c0, c1) and g + 8 (c2, c3), columns
// 2t and 2t + 1. Two neighbouring n8 accumulators of S are, packed to bf16,
// exactly the A fragment of P for one k16 step of P V (FA2's register reuse).
template <int D>
__global__ void __launch_bounds__(kThreads, 2)
prefill_attention_kernel(PagedKvBf16 kv, const int32_t* __restrict__ block_table,
                         int32_t ctx_first, const float* __restrict__ q, int64_t q_row_stride,
                         bf16* __restrict__ out, int32_t n_q, int32_t n_heads, float scale_log2,
                         PartitionMaskGpu mask, bool has_mask) {
  constexpr int kChunks = D / 8;                    // 16-byte chunks per row
  constexpr int kRowsPerPass = kThreads / kChunks;  // tile rows one pass of the CTA loads
  constexpr int kPasses = kBlockN / kRowsPerPass;
  constexpr int kKSteps = D / 16;                   // k16 steps of Q K^T
  constexpr int kDTiles = D / 8;                    // n8 tiles of O
  static_assert(16 % kRowsPerPass == 0 || kRowsPerPass % 16 == 0, "pass rows vs key groups");

  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* const s_q = reinterpret_cast<bf16*>(smem_raw);  // [kBlockM, D]
  bf16* const s_k = s_q + kBlockM * D;                  // [2][kBlockN, D]
  bf16* const s_v = s_k + 2 * kBlockN * D;              // [2][kBlockN, D]

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int h = blockIdx.x;
  const int kvh = h / (n_heads / kv.n_kv_heads);
  // NOTE: the last query tiles have the most keys; they get the lowest block
  // ids so that they start first and the short ones fill in at the end.
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;
  const int key_end = ctx_first + min(q0 + kBlockM, n_q) - 1;  // keys [0, key_end) for the CTA
  const int n_tiles = (key_end + kBlockN - 1) / kBlockN;

  // This warp's rows and the keys they need.
  const int wq0 = q0 + warp * kRowsPerWarp;
  const int w_key_end = wq0 < n_q ? ctx_first + min(wq0 + kRowsPerWarp, n_q) - 1 : 0;
  const int w_key_all = ctx_first + wq0;  // keys below this are causally visible to every row

  // Q: fp32 -> bf16 (unscaled: the scale goes into the softmax), zeros past n_q.
  {
    const bool vec4 = (reinterpret_cast<uintptr_t>(q) % 16 == 0) && (q_row_stride % 4 == 0);
    for (int idx = tid; idx < kBlockM * kChunks; idx += kThreads) {
      const int r = idx / kChunks, c = idx % kChunks;
      float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (q0 + r < n_q) {
        const float* src = q + static_cast<int64_t>(q0 + r) * q_row_stride +
                           static_cast<int64_t>(h) * D + c * 8;
        if (vec4) {
          const float4 a = __ldg(reinterpret_cast<const float4*>(src));
          const float4 b = __ldg(reinterpret_cast<const float4*>(src) + 1);
          x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w;
          x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) x[e] = __ldg(src + e);
        }
      }
      uint4 packed;
      packed.x = pack_bf16(x[0], x[1]);
      packed.y = pack_bf16(x[2], x[3]);
      packed.z = pack_bf16(x[4], x[5]);
      packed.w = pack_bf16(x[6], x[7]);
      *reinterpret_cast<uint4*>(s_q + swz<D>(r, c)) = packed;
    }
  }

  // Gathers keys [n0, n0 + kBlockN) of one pool into a swizzled tile; keys at
  // or past key_end are zeros (never read: the block table may end there).
  auto load_tile = [&](bf16* dst, const bf16* pool, int n0) {
    int64_t group_off[kKeyGroups];
    int blk = n0 / kv.block_size, slot = n0 - blk * kv.block_size;
#pragma unroll
    for (int g = 0; g < kKeyGroups; ++g) {
      if (g > 0) {
        slot += 16;  // block_size % 16 == 0, so a group never straddles blocks
        if (slot == kv.block_size) slot = 0, ++blk;
      }
      group_off[g] = 0;
      if (n0 + 16 * g < key_end) {
        group_off[g] =
            ((static_cast<int64_t>(__ldg(block_table + blk)) * kv.n_kv_heads + kvh) *
                 kv.block_size + slot) * D;
      }
    }
    const int r_in_pass = tid / kChunks, c = tid % kChunks;
#pragma unroll
    for (int p = 0; p < kPasses; ++p) {
      const int r = p * kRowsPerPass + r_in_pass;
      const bool valid = n0 + r < key_end;
      // r / 16 is p * kRowsPerPass / 16 + r_in_pass / 16: the first term known at
      // compile time, the second 0 unless a pass covers several groups.
      int64_t base = group_off[p * kRowsPerPass / 16];
      if constexpr (kRowsPerPass > 16) {
#pragma unroll
        for (int sg = 1; sg < kRowsPerPass / 16; ++sg) {
          if (r_in_pass / 16 == sg) base = group_off[p * kRowsPerPass / 16 + sg];
        }
      }
      const int64_t off = valid ? base + (r & 15) * D + c * 8 : 0;
      cp_async16(smem_u32(dst + swz<D>(r, c)), pool + off, valid);
    }
  };

  // Per-thread rows: m tile mi, half hf -> local row warp*32 + mi*16 + hf*8 + lane/4.
  int hide_upto[kMTiles][2];
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int qi = wq0 + mi * 16 + hf * 8 + lane / 4;
      hide_upto[mi][hf] = has_mask && qi < n_q ? __ldg(mask.hide_upto + qi) : -1;
    }
  }
  const int region = has_mask ? mask.n_partitions * mask.lag : 0;

  float acc_o[kMTiles][kDTiles][4];
  float row_max[kMTiles][2], row_sum[kMTiles][2];  // row_max in log2 units (scaled)
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mi][dt][e] = 0.f;
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) row_max[mi][hf] = -INFINITY, row_sum[mi][hf] = 0.f;
  }

  // Pipeline per tile t, d=128: [K t in flight] issue V t; wait K t; issue
  // K t+1; S; softmax; wait V t; O += P V. d=64: [K, V t in flight] wait;
  // issue K, V t+1; S; softmax; O += P V. Every thread commits one group per
  // issue (possibly empty) so that wait_group counts agree.
  // NOTE: measured on the H200 (T=32768): d=64 has registers to spare, so it
  // keeps Q in registers and loads K and V of tile t+1 together behind one
  // barrier per tile (+20%); d=128 at 255 registers would spill doing that and
  // is fastest with V issued a step later than K and two barriers per tile.
  constexpr bool kQRegs = D == 64;
  constexpr bool kOneSync = D == 64;
  uint32_t qf[kQRegs ? kMTiles : 1][kQRegs ? kKSteps : 1][4];
  if constexpr (kQRegs) {
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
        const int row = warp * kRowsPerWarp + mi * 16 + (lane & 15);
        ldmatrix_x4(qf[mi][kk], smem_u32(s_q + swz<D>(row, 2 * kk + (lane >> 4))));
      }
    }
  }
  load_tile(s_k, kv.k, 0);
  if constexpr (kOneSync) load_tile(s_v, kv.v, 0);
  cp_async_commit();
  for (int t = 0; t < n_tiles; ++t) {
    const int n0 = t * kBlockN;
    const bf16* const k_tile = s_k + (t & 1) * kBlockN * D;
    const bf16* const v_tile = s_v + (t & 1) * kBlockN * D;
    if constexpr (kOneSync) {
      cp_async_wait<0>();  // K and V tile t have landed (for this thread) ...
      __syncthreads();     // ... and for all; every warp is also done with tile t - 1
      if (t + 1 < n_tiles) {
        load_tile(s_k + ((t + 1) & 1) * kBlockN * D, kv.k, n0 + kBlockN);
        load_tile(s_v + ((t + 1) & 1) * kBlockN * D, kv.v, n0 + kBlockN);
      }
      cp_async_commit();
    } else {
      load_tile(s_v + (t & 1) * kBlockN * D, kv.v, n0);
      cp_async_commit();
      cp_async_wait<1>();  // K tile t has landed (for this thread) ...
      __syncthreads();     // ... and for all; every warp is also done with tile t - 1
      // K tile t + 1 goes where K tile t - 1 was; issued before S while few
      // registers are live.
      if (t + 1 < n_tiles) load_tile(s_k + ((t + 1) & 1) * kBlockN * D, kv.k, n0 + kBlockN);
      cp_async_commit();
    }
    const bool active = n0 < w_key_end;  // warp-uniform: causal tiles past the warp's rows skip

    float s[kMTiles][kNTiles][4];
    if (active) {
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mi][nt][e] = 0.f;
        }
      }
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
        uint32_t a[kMTiles][4];
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) {
          if constexpr (kQRegs) {
#pragma unroll
            for (int e = 0; e < 4; ++e) a[mi][e] = qf[mi][kk][e];
          } else {
            const int row = warp * kRowsPerWarp + mi * 16 + (lane & 15);
            ldmatrix_x4(a[mi], smem_u32(s_q + swz<D>(row, 2 * kk + (lane >> 4))));
          }
        }
#pragma unroll
        for (int np = 0; np < kNTiles / 2; ++np) {
          // Matrices: keys np*16 + 0..7 / 8..15, channels 16kk + 0..7 / 8..15
          // -> b0, b1 of n tile 2np, then of 2np + 1.
          uint32_t b[4];
          const int key = np * 16 + (lane & 7) + ((lane >> 4) << 3);
          ldmatrix_x4(b, smem_u32(k_tile + swz<D>(key, 2 * kk + ((lane >> 3) & 1))));
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi) {
            mma_bf16(s[mi][2 * np], a[mi], b[0], b[1]);
            mma_bf16(s[mi][2 * np + 1], a[mi], b[2], b[3]);
          }
        }
      }
    }
    uint32_t p[kMTiles][kBlockN / 16][4];  // P as A fragments, per k16 step of P V
    if (active) {
      const bool causal_tile = n0 + kBlockN > w_key_all;
      const bool mask_tile = region > 0 && n0 < mask.begin + region && n0 + kBlockN > mask.begin;
      if (causal_tile || mask_tile) {
        // Per key of this thread: the partition if the mask may hide it.
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int j = n0 + nt * 8 + 2 * (lane & 3) + e;
            int hide_part = kNeverHidden;
            if (mask_tile) {
              const int off = j - mask.begin;
              if (off >= 0 && off < region &&
                  __ldg(mask.selected + static_cast<int64_t>(kvh) * region + off) == 0) {
                hide_part = off / mask.lag;
              }
            }
#pragma unroll
            for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
              for (int hf = 0; hf < 2; ++hf) {
                const int limit = w_key_all + mi * 16 + hf * 8 + lane / 4;  // ctx_first + qi
                if (j >= limit || hide_part <= hide_upto[mi][hf]) {
                  s[mi][nt][2 * hf + e] = -INFINITY;
                }
              }
            }
          }
        }
      }

      // Online softmax; a row's four lanes (same g) combine by shuffles.
#pragma unroll
      for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
            mx = fmaxf(mx, fmaxf(s[mi][nt][2 * hf], s[mi][nt][2 * hf + 1]));
          }
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(row_max[mi][hf], mx * scale_log2);
          // A row with nothing visible yet keeps m = -inf; subtracting 0 then
          // gives exp2(-inf) = 0 instead of NaN.
          const float m_use = m_new == -INFINITY ? 0.f : m_new;
          const float alpha = exp2_approx(row_max[mi][hf] - m_use);
          row_max[mi][hf] = m_new;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float pe = exp2_approx(fmaf(s[mi][nt][2 * hf + e], scale_log2, -m_use));
              s[mi][nt][2 * hf + e] = pe;
              sum += pe;
            }
          }
          row_sum[mi][hf] = row_sum[mi][hf] * alpha + sum;  // this lane's share
#pragma unroll
          for (int dt = 0; dt < kDTiles; ++dt) {
            acc_o[mi][dt][2 * hf] *= alpha;
            acc_o[mi][dt][2 * hf + 1] *= alpha;
          }
        }
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) {
          p[mi][kk][0] = pack_bf16(s[mi][2 * kk][0], s[mi][2 * kk][1]);
          p[mi][kk][1] = pack_bf16(s[mi][2 * kk][2], s[mi][2 * kk][3]);
          p[mi][kk][2] = pack_bf16(s[mi][2 * kk + 1][0], s[mi][2 * kk + 1][1]);
          p[mi][kk][3] = pack_bf16(s[mi][2 * kk + 1][2], s[mi][2 * kk + 1][3]);
        }
      }
    }

    if constexpr (!kOneSync) {
      cp_async_wait<1>();  // V tile t has landed (K tile t + 1 may still fly)
      __syncthreads();
    }
    if (active) {
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
#pragma unroll
        for (int dp = 0; dp < kDTiles / 2; ++dp) {
          // Transposed matrices: keys 16kk + 0..7 / 8..15, channels 16dp + 0..7
          // / 8..15 -> b0, b1 of d tile 2dp, then of 2dp + 1.
          uint32_t b[4];
          ldmatrix_x4_trans(
              b, smem_u32(v_tile + swz<D>(kk * 16 + (lane & 15), 2 * dp + (lane >> 4))));
#pragma unroll
          for (int mi = 0; mi < kMTiles; ++mi) {
            mma_bf16(acc_o[mi][2 * dp], p[mi][kk], b[0], b[1]);
            mma_bf16(acc_o[mi][2 * dp + 1], p[mi][kk], b[2], b[3]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  // Normalise, stage the warp's rows in its own (no longer read) part of s_q,
  // then write whole 16-byte chunks of each output row.
  __syncwarp();
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float sum = row_sum[mi][hf];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int row = warp * kRowsPerWarp + mi * 16 + hf * 8 + lane / 4;
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        *reinterpret_cast<uint32_t*>(s_q + swz<D>(row, dt) + 2 * (lane & 3)) =
            pack_bf16(acc_o[mi][dt][2 * hf] * inv, acc_o[mi][dt][2 * hf + 1] * inv);
      }
    }
  }
  __syncwarp();
  for (int idx = lane; idx < kRowsPerWarp * kChunks; idx += 32) {
    const int r = idx / kChunks, c = idx % kChunks;
    const int qi = wq0 + r;
    if (qi < n_q) {
      *reinterpret_cast<uint4*>(out + (static_cast<int64_t>(qi) * n_heads + h) * D + c * 8) =
          *reinterpret_cast<const uint4*>(s_q + swz<D>(warp * kRowsPerWarp + r, c));
    }
  }
}

[[noreturn]] void fail(const char* what, long long value) {
  std::fprintf(stderr, "lagserve: prefill_attention: %s (got %lld)\n", what, value);
  std::abort();
}

template <int D>
void launch(const PagedKvBf16& kv, const int32_t* block_table, int32_t ctx_first,
            const float* q, int64_t q_row_stride, bf16* out, int32_t n_q, int32_t n_heads,
            float scale, const PartitionMaskGpu& mask, bool has_mask, cudaStream_t stream) {
  constexpr size_t smem = smem_bytes<D>();
  // Per call, not once: the attribute is per device, and the call is cheap.
  LAGSERVE_CUDA_CHECK(cudaFuncSetAttribute(prefill_attention_kernel<D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  const dim3 grid(n_heads, (n_q + kBlockM - 1) / kBlockM);
  prefill_attention_kernel<D><<<grid, kThreads, smem, stream>>>(
      kv, block_table, ctx_first, q, q_row_stride, out, n_q, n_heads, scale * kLog2e, mask,
      has_mask);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace

void prefill_attention(const PagedKvBf16& kv, const int32_t* block_table, int32_t ctx_first,
                       const float* q, int64_t q_row_stride, bf16* out, int32_t n_q,
                       int32_t n_heads, float scale, const PartitionMaskGpu* mask,
                       cudaStream_t stream) {
  if (n_q <= 0) return;
  if (kv.block_size < 16 || kv.block_size % 16 != 0) {
    fail("block_size must be a positive multiple of 16", kv.block_size);
  }
  if (ctx_first < 1) fail("ctx_first must be >= 1 (query 0 sees at least itself)", ctx_first);
  if (kv.n_kv_heads <= 0 || n_heads % kv.n_kv_heads != 0) {
    fail("n_heads must be a multiple of n_kv_heads", n_heads);
  }
  if (n_heads > 65535) fail("too many heads for the grid", n_heads);
  if ((reinterpret_cast<uintptr_t>(kv.k) | reinterpret_cast<uintptr_t>(kv.v) |
       reinterpret_cast<uintptr_t>(out)) % 16 != 0) {
    fail("kv.k, kv.v and out must be 16-byte aligned", 0);
  }
  const bool has_mask = mask != nullptr && mask->n_partitions > 0;
  PartitionMaskGpu m;
  if (has_mask) {
    if (mask->lag <= 0) fail("mask lag must be positive", mask->lag);
    if (mask->selected == nullptr || mask->hide_upto == nullptr) fail("mask without arrays", 0);
    m = *mask;
  }
  switch (kv.head_dim) {
    case 64:
      launch<64>(kv, block_table, ctx_first, q, q_row_stride, out, n_q, n_heads, scale, m,
                 has_mask, stream);
      break;
    case 128:
      launch<128>(kv, block_table, ctx_first, q, q_row_stride, out, n_q, n_heads, scale, m,
                  has_mask, stream);
      break;
    default:
      fail("head_dim must be 64 or 128", kv.head_dim);
  }
}

}  // namespace lagserve::kernels::cuda
