// Skinny GEMMs for decode rows, on tensor cores, with the ops around them
// fused: y[r, n] = sum_k a[r, k] * w[n, k] (a linear layer's layout, w bf16
// [N, K]) for any number of rows, 32 at a time, reading w once per 32 rows.
//
// Every output's summation order depends on N, K and the GPU's SM count only,
// never on how many rows run together or where a row sits among them: a row
// gives the same bits alone or in a batch, which the runtime's
// together-vs-alone property needs (cuBLAS picks its kernel by M and so does
// not promise it).
//
// What is fused:
//   input:  bf16 rows as they are, or fp32 rows RMS-normalised on the fly
//           (sum_k bf16(x[k] * norm[k]) * w[n, k], times rsqrt(mean(x^2) + eps));
//   output: store, add to y (the residual), SwiGLU of the gate and up halves,
//           or bias + NeoX RoPE + the paged K/V cache write of a qkv row.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/paged_kv.h"

namespace lagserve::kernels::cuda {

enum class GemvEpilogue : int32_t { kStore, kAdd, kSwiglu, kQkvRope };

struct GemvInput {
  const bf16* x = nullptr;             // bf16 rows [*, K], used as they are; or
  const float* x_norm = nullptr;       // fp32 rows [*, K], RMS-normalised with
  const float* norm_weight = nullptr;  // these weights [K] and eps
  float eps = 0.f;
  const int32_t* rows = nullptr;       // row r reads input row rows[r] (null: row r)
};

struct GemvOutput {
  GemvEpilogue epilogue = GemvEpilogue::kStore;
  // kStore / kAdd: fp32 y[rows[r] (null: r), n], row stride y_ld.
  // kQkvRope: the rotated q | k | v row, fp32 y[r, n], row stride N.
  float* y = nullptr;
  int64_t y_ld = 0;
  const int32_t* rows = nullptr;
  // kSwiglu: act[r, i] = bf16(silu(p[r, i]) * p[r, N/2 + i]), row stride N/2.
  bf16* act = nullptr;
  // kQkvRope (N = (n_heads + 2 * kv.n_kv_heads) * kv.head_dim, q | k | v):
  // bias (null: none), RoPE of q and k at positions[r] (inv_freq [head_dim / 2]),
  // k and v written in bf16 to kv at slots[r], as qkv_rope_write does.
  const float* bias = nullptr;
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;
  const int32_t* slots = nullptr;
  PagedKvBf16 kv;
  int32_t n_heads = 0;
};

// Where blocks that split K meet: a float workspace and one counter per 32
// output features (zero before the first launch; each launch leaves them zero).
struct GemvScratch {
  float* workspace = nullptr;
  int64_t workspace_floats = 0;
  int32_t* counters = nullptr;
  int64_t n_counters = 0;
};

// Whether the kernel takes this shape: K a multiple of 16, N of 32, and for
// kQkvRope a head_dim that is a multiple of 32.
bool gemv_supports(int64_t N, int64_t K, GemvEpilogue epilogue, int32_t head_dim);

// The scratch a shape needs on a GPU with sm_count SMs.
int64_t gemv_workspace_floats(int64_t N, int64_t K, int32_t sm_count);
inline int64_t gemv_counters(int64_t N) { return N / 32; }

// M rows (any number; 32 per launch). Checks gemv_supports and the scratch.
void gemv_bf16(const bf16* w, int64_t N, int64_t K, const GemvInput& in, const GemvOutput& out,
               int64_t M, const GemvScratch& scratch, int32_t sm_count, cudaStream_t stream);

// The streaming variant, for one row or two (decode at batch 1; from 2 rows
// the tensor-core kernel is faster, docs/cuda.md): the same inputs, outputs
// and promise (a row's bits never depend on the rows beside it), on CUDA
// cores. Each warp owns two output features (the pair an epilogue needs:
// gate and up, or a RoPE rotation pair) and a slice of K, and reads each of
// the two weight rows 512 contiguous bytes per load instruction, up to 8 such
// loads per row in flight; the tensor-core kernel reads 16 rows 64 bytes at
// a time. Any number of rows, 8 per launch; no scratch (the slices of K meet
// in shared memory). Shapes: N a multiple of 8, K of 8, for kQkvRope an even
// head_dim.
bool gemv_stream_supports(int64_t N, int64_t K, GemvEpilogue epilogue, int32_t head_dim);
void gemv_stream_bf16(const bf16* w, int64_t N, int64_t K, const GemvInput& in, const GemvOutput& out,
                      int64_t M, int32_t sm_count, cudaStream_t stream);

}  // namespace lagserve::kernels::cuda
