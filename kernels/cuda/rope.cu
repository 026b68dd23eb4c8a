#include "kernels/cuda/rope.h"

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row; thread t handles rotation pairs (i, i + half) of the
// heads in turn: q heads first, then k heads (which it also writes to the
// cache), then copies v.
__global__ void qkv_rope_write_kernel(float* qkv, const float* bias, const int32_t* positions,
                                      const float* inv_freq, const int32_t* slots, PagedKvBf16 kv,
                                      int32_t n_heads) {
  const int64_t r = blockIdx.x;
  const int32_t d = kv.head_dim, half = d / 2, n_kv = kv.n_kv_heads;
  const int64_t width = static_cast<int64_t>(n_heads + 2 * n_kv) * d;
  float* row = qkv + r * width;
  if (bias != nullptr) {
    for (int64_t i = threadIdx.x; i < width; i += blockDim.x) row[i] += bias[i];
    __syncthreads();
  }
  const float pos = static_cast<float>(positions[r]);
  const int32_t slot = slots[r];
  const int64_t block = slot / kv.block_size, in_block = slot % kv.block_size;
  // Rotations: (n_heads + n_kv) heads x half pairs.
  for (int32_t p = threadIdx.x; p < (n_heads + n_kv) * half; p += blockDim.x) {
    const int32_t h = p / half, i = p % half;
    float s, c;
    // NOTE: fp32 product, as the CPU kernel and transformers; sincosf keeps
    // full accuracy for the large angles of long contexts.
    sincosf(pos * inv_freq[i], &s, &c);
    float* v = row + static_cast<int64_t>(h) * d;
    const float a = v[i], b = v[i + half];
    const float ra = a * c - b * s, rb = b * c + a * s;
    v[i] = ra;
    v[i + half] = rb;
    if (h >= n_heads) {
      const int32_t kh = h - n_heads;
      bf16* dst = kv.k + ((block * n_kv + kh) * kv.block_size + in_block) * d;
      dst[i] = __float2bfloat16(ra);
      dst[i + half] = __float2bfloat16(rb);
    }
  }
  const float* vsrc = row + static_cast<int64_t>(n_heads + n_kv) * d;
  for (int32_t e = threadIdx.x; e < n_kv * d; e += blockDim.x) {
    const int32_t kh = e / d, j = e % d;
    kv.v[((block * n_kv + kh) * kv.block_size + in_block) * d + j] = __float2bfloat16(vsrc[e]);
  }
}

}  // namespace

void qkv_rope_write(float* qkv, const float* bias, const int32_t* positions, const float* inv_freq,
                    const int32_t* slots, const PagedKvBf16& kv, int64_t n_rows, int32_t n_heads,
                    cudaStream_t stream) {
  if (n_rows == 0) return;
  qkv_rope_write_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(
      qkv, bias, positions, inv_freq, slots, kv, n_heads);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

}  // namespace lagserve::kernels::cuda
