#include "kernels/cuda/rope.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.h"

namespace lagserve::kernels::cuda {
namespace {

// Block (row, head): q and k heads rotate, thread i taking the pair
// (i, i + half); v heads are copied, thread i taking elements i and i + half.
// k and v also go to the cache. Every load of a thread goes out at once: a
// decode step's few rows cost one round trip to memory, not one per head.
__global__ void qkv_rope_write_kernel(float* qkv, const float* bias, const int32_t* positions,
                                      const float* inv_freq, const int32_t* slots, PagedKvBf16 kv,
                                      int32_t n_heads) {
  // The decode attention after it may start early: before its pdl_wait it
  // reads only keys cached before this step (kernels/cuda/pdl.h).
  pdl_release();
  const int64_t r = blockIdx.x;
  const int32_t h = blockIdx.y, i = threadIdx.x;
  const int32_t d = kv.head_dim, half = d / 2, n_kv = kv.n_kv_heads;
  const int64_t width = static_cast<int64_t>(n_heads + 2 * n_kv) * d;
  float* v = qkv + r * width + static_cast<int64_t>(h) * d;
  float a = v[i], b = v[i + half];
  if (bias != nullptr) {
    a += bias[static_cast<int64_t>(h) * d + i];
    b += bias[static_cast<int64_t>(h) * d + i + half];
  }
  const int32_t slot = slots[r];
  const int64_t block = slot / kv.block_size, in_block = slot % kv.block_size;
  if (h < n_heads + n_kv) {
    float s, c;
    // NOTE: fp32 product, as the CPU kernel and transformers; sincosf keeps
    // full accuracy for the large angles of long contexts.
    sincosf(static_cast<float>(positions[r]) * inv_freq[i], &s, &c);
    const float ra = a * c - b * s, rb = b * c + a * s;
    v[i] = ra;
    v[i + half] = rb;
    if (h >= n_heads) {
      bf16* dst = kv.k + ((block * n_kv + (h - n_heads)) * kv.block_size + in_block) * d;
      dst[i] = __float2bfloat16(ra);
      dst[i + half] = __float2bfloat16(rb);
    }
  } else {
    if (bias != nullptr) {
      v[i] = a;
      v[i + half] = b;
    }
    bf16* dst = kv.v + ((block * n_kv + (h - n_heads - n_kv)) * kv.block_size + in_block) * d;
    dst[i] = __float2bfloat16(a);
    dst[i + half] = __float2bfloat16(b);
  }
}

}  // namespace

void qkv_rope_write(float* qkv, const float* bias, const int32_t* positions, const float* inv_freq,
                    const int32_t* slots, const PagedKvBf16& kv, int64_t n_rows, int32_t n_heads,
                    cudaStream_t stream) {
  if (n_rows == 0) return;
  const dim3 grid(static_cast<unsigned>(n_rows), static_cast<unsigned>(n_heads + 2 * kv.n_kv_heads));
  qkv_rope_write_kernel<<<grid, kv.head_dim / 2, 0, stream>>>(qkv, bias, positions, inv_freq, slots, kv,
                                                              n_heads);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
