// Sampling on the GPU: one CTA of 1024 threads per row of logits. Passes over
// the vocabulary: scale (and copy), max, then for each of top-k and top-p a
// radix select of three passes (11 + 11 + 10 bits of the float's order key;
// after the first, only the few values in the chosen bin take part), then a
// last pass that masks the filtered ids and, to draw, sums each thread's
// contiguous chunk of ids so that one thread walks the chunk holding u.
#include "kernels/cuda/sampling.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {
namespace {

constexpr int kThreads = 1024;
// Below this temperature sampling is greedy (as runtime::Sampler and vLLM).
constexpr float kGreedyTemperature = 1e-5f;
// Masses are integers in units of 2^-40 of the most likely token's weight:
// exact sums, in any order (a row of 2^17 ids sums below 2^58).
constexpr float kFixedOne = 0x1p40f;
constexpr int kRadixBins = 2048;  // the widest radix digit: 11 bits
constexpr int kDefaultSmem = 48 * 1024;

struct ArgMax {
  float v;
  int32_t i;
};
struct ArgMaxOp {
  __device__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    return a.v > b.v || (a.v == b.v && a.i < b.i) ? a : b;
  }
};

using BlockScan = cub::BlockScan<uint64_t, kThreads, cub::BLOCK_SCAN_WARP_SCANS>;
using BlockArgMax = cub::BlockReduce<ArgMax, kThreads>;

struct Shared {
  union {
    BlockScan::TempStorage scan;
    BlockArgMax::TempStorage argmax;
  } tmp;
  unsigned long long hist[kRadixBins];  // radix select: weight per digit
  ArgMax best;
  uint32_t digit;
  unsigned long long above;
};

// Floats as unsigned integers in the same order (-0 and +0 as one value);
// key_value inverts it.
__device__ uint32_t order_key(float f) {
  uint32_t b = __float_as_uint(f);
  if ((b & 0x7fffffffu) == 0) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ float key_value(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// exp(x - m) in 2^-40 units (x <= m).
__device__ uint64_t fixed_weight(float x, float m) {
  return __float2ull_rz(expf(x - m) * kFixedOne);
}

__device__ float penalize(float l, float rp) { return l > 0.f ? __fdiv_rn(l, rp) : __fmul_rn(l, rp); }

// The largest value v of x such that the weights of the values >= v add up to
// at least need_of(total), total the weight of the whole row; -inf when total
// is less than that. weight(v) >= 0 for every value; 0 means "not a candidate".
// Three passes, one per radix digit of the order key.
template <typename Weight, typename NeedOf>
__device__ float radix_cut(const float* x, int32_t vocab, Weight weight, NeedOf need_of,
                           Shared& sh) {
  constexpr int kShift[3] = {21, 10, 0};
  constexpr int kBits[3] = {11, 11, 10};
  const int tid = threadIdx.x;
  uint32_t prefix = 0;       // the key bits chosen so far, in place
  unsigned long long above = 0;  // weight of the keys above the chosen prefix
  unsigned long long need = 0;
#pragma unroll
  for (int level = 0; level < 3; ++level) {
    const int shift = kShift[level], n_bins = 1 << kBits[level];
    const uint32_t high_mask = level == 0 ? 0u : ~0u << (shift + kBits[level]);
    for (int b = tid; b < kRadixBins; b += kThreads) sh.hist[b] = 0;
    __syncthreads();
    for (int32_t i = tid; i < vocab; i += kThreads) {
      const float v = x[i];
      const uint32_t key = order_key(v);
      if ((key & high_mask) != prefix) continue;
      const unsigned long long w = weight(v);
      if (w != 0) atomicAdd(&sh.hist[(key >> shift) & (n_bins - 1)], w);
    }
    __syncthreads();
    // Bins in descending order: thread t holds bins n_bins - 1 - 2t and n_bins - 2 - 2t.
    uint64_t items[2], incl[2], total = 0;
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const int b = n_bins - 1 - (2 * tid + q);
      items[q] = b >= 0 ? sh.hist[b] : 0;
    }
    BlockScan(sh.tmp.scan).InclusiveSum(items, incl, total);
    if (level == 0) {
      need = need_of(total);
      if (need < 1) need = 1;
      if (total < need) {  // the same in every thread
        __syncthreads();  // the scan storage is reused
        return -INFINITY;
      }
    }
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const unsigned long long hi = above + incl[q], lo = hi - items[q];
      if (items[q] != 0 && lo < need && hi >= need) {  // exactly one bin of the CTA
        sh.digit = static_cast<uint32_t>(n_bins - 1 - (2 * tid + q));
        sh.above = lo;
      }
    }
    __syncthreads();
    prefix |= sh.digit << shift;
    above = sh.above;
    __syncthreads();  // sh.hist, sh.digit and the scan storage are reused
  }
  return key_value(prefix);
}

template <bool kDraw>
__global__ __launch_bounds__(kThreads) void sampling_kernel(const float* logits, int32_t vocab,
                                                            const SamplingRowParams* params,
                                                            SamplingTokenLists lists,
                                                            const float* u, float* processed,
                                                            int32_t* tokens) {
  __shared__ Shared sh;
  extern __shared__ uint32_t seen[];  // [ceil(vocab / 32)]: ids already penalized
  const int tid = threadIdx.x;
  const int32_t row = blockIdx.x;
  const float* in = logits + static_cast<int64_t>(row) * vocab;
  float* x = processed + static_cast<int64_t>(row) * vocab;  // may alias `in`, element by element
  const SamplingRowParams p = params[row];
  const bool greedy = p.temperature < kGreedyTemperature;
  // NOTE: as runtime::Sampler, scale while copying and scale the constants of
  // the bias and the additive penalties alike; explicit _rn operations keep
  // nvcc from contracting them into FMAs, so the values match the CPU's.
  const float scale = greedy ? 1.f : __fdiv_rn(1.f, p.temperature);

  // 1. Scale.
  for (int32_t i = tid; i < vocab; i += kThreads) x[i] = __fmul_rn(in[i], scale);
  __syncthreads();
  // 2. Logit bias, in list order (repeats add up as on the CPU), then bans.
  if (lists.bias_offsets != nullptr && tid == 0) {
    for (int32_t j = lists.bias_offsets[row]; j < lists.bias_offsets[row + 1]; ++j) {
      const int32_t id = lists.bias_ids[j];
      x[id] = __fadd_rn(x[id], __fmul_rn(lists.bias_values[j], scale));
    }
  }
  __syncthreads();
  if (lists.banned_offsets != nullptr) {
    for (int32_t j = lists.banned_offsets[row] + tid; j < lists.banned_offsets[row + 1];
         j += kThreads) {
      x[lists.banned_ids[j]] = -INFINITY;
    }
  }
  __syncthreads();
  // 3. Penalties: repetition on output and prompt ids (once per id), then the
  // additive ones on output ids.
  const bool repetition = p.repetition_penalty != 1.f;
  const bool additive = p.presence_penalty != 0.f || p.frequency_penalty != 0.f;
  if (repetition || additive) {
    for (int32_t w = tid; w < (vocab + 31) / 32; w += kThreads) seen[w] = 0;
    __syncthreads();
    const int32_t o0 = lists.output_offsets != nullptr ? lists.output_offsets[row] : 0;
    const int32_t o1 = lists.output_offsets != nullptr ? lists.output_offsets[row + 1] : 0;
    for (int32_t j = o0 + tid; j < o1; j += kThreads) {
      const int32_t id = lists.output_ids[j];
      atomicOr(&seen[id >> 5], 1u << (id & 31));
    }
    __syncthreads();
    for (int32_t j = o0 + tid; j < o1; j += kThreads) {  // ids unique: one writer each
      const int32_t id = lists.output_ids[j];
      const float l = repetition ? penalize(x[id], p.repetition_penalty) : x[id];
      const float c = static_cast<float>(lists.output_counts[j]);
      const float sub = __fmul_rn(__fadd_rn(__fmul_rn(p.frequency_penalty, c), p.presence_penalty),
                                  scale);
      x[id] = __fsub_rn(l, sub);
    }
    if (repetition && lists.prompt_offsets != nullptr) {
      for (int32_t j = lists.prompt_offsets[row] + tid; j < lists.prompt_offsets[row + 1];
           j += kThreads) {
        const int32_t id = lists.prompt_ids[j];
        const uint32_t bit = 1u << (id & 31);
        if (atomicOr(&seen[id >> 5], bit) & bit) continue;  // an output id, or a repeat
        x[id] = penalize(x[id], p.repetition_penalty);
      }
    }
    __syncthreads();
  }
  if (greedy && !kDraw) return;

  // 4. The maximum, and the first id holding it.
  ArgMax best{-INFINITY, INT32_MAX};
  for (int32_t i = tid; i < vocab; i += kThreads) {
    const float v = x[i];
    if (v > best.v || best.i == INT32_MAX) best = ArgMax{v, i};
  }
  best = BlockArgMax(sh.tmp.argmax).Reduce(best, ArgMaxOp{});
  if (tid == 0) sh.best = best;
  __syncthreads();
  best = sh.best;
  if (greedy) {
    if (tid == 0) tokens[row] = best.i;
    return;
  }
  const float m = best.v;

  // 5. The cut: top_k, then top_p over the top_k survivors, and min_p; each
  // keeps every id whose value is >= its threshold (ties at a cut all stay).
  const bool use_k = p.top_k > 0 && p.top_k < vocab;
  float t_k = -INFINITY;
  if (use_k) {
    const auto count = [](float) -> unsigned long long { return 1; };
    const auto k = [&p](uint64_t) -> unsigned long long { return p.top_k; };
    t_k = radix_cut(x, vocab, count, k, sh);
  }
  float t_p = -INFINITY;
  if (p.top_p < 1.f) {
    // vLLM keeps an id iff the mass strictly above it is < top_p * Z: the cut
    // is the largest value whose mass at or above reaches top_p * Z.
    const auto mass = [t_k, m](float v) -> unsigned long long {
      return v >= t_k ? fixed_weight(v, m) : 0ull;
    };
    const auto need = [&p](uint64_t total) -> unsigned long long {
      return static_cast<unsigned long long>(
          ceil(static_cast<double>(p.top_p) * static_cast<double>(total)));
    };
    t_p = radix_cut(x, vocab, mass, need, sh);
  }
  const float t_min = p.min_p > 0.f ? m + logf(p.min_p) : -INFINITY;
  const float t = fmaxf(t_k, fmaxf(t_p, t_min));

  // 6. Mask, and draw.
  if (!kDraw) {
    for (int32_t i = tid; i < vocab; i += kThreads) {
      if (!(x[i] >= t)) x[i] = -INFINITY;
    }
    return;
  }
  const int32_t chunk = (vocab + kThreads - 1) / kThreads;
  const int32_t b0 = min(vocab, tid * chunk), b1 = min(vocab, b0 + chunk);
  uint64_t mass = 0;
  for (int32_t i = b0; i < b1; ++i) {
    const float v = x[i];
    if (v >= t) {
      mass += fixed_weight(v, m);
    } else {
      x[i] = -INFINITY;
    }
  }
  uint64_t before = 0, total = 0;
  BlockScan(sh.tmp.scan).ExclusiveSum(mass, before, total);
  const double scaled_u = fmin(fmax(static_cast<double>(u[row]), 0.0), 1.0) * static_cast<double>(total);
  uint64_t target = static_cast<uint64_t>(scaled_u);
  if (target >= total) target = total - 1;  // total >= 2^40: the maximum always survives
  if (mass != 0 && before <= target && target - before < mass) {  // exactly one thread
    uint64_t acc = before;
    for (int32_t i = b0; i < b1; ++i) {
      const float v = x[i];
      if (!(v >= t)) continue;
      acc += fixed_weight(v, m);
      if (target < acc) {
        tokens[row] = i;
        break;
      }
    }
  }
}

template <bool kDraw>
void launch(const float* logits, int32_t n_rows, int32_t vocab, const SamplingRowParams* params,
            const SamplingTokenLists& lists, const float* u, float* processed, int32_t* tokens,
            cudaStream_t stream) {
  if (n_rows <= 0) return;
  if (vocab < 1) {
    std::fprintf(stderr, "lagserve: sampling needs vocab >= 1, got %d\n", vocab);
    std::abort();
  }
  const size_t smem = sizeof(uint32_t) * ((static_cast<size_t>(vocab) + 31) / 32);
  if (smem + sizeof(Shared) > kDefaultSmem) {
    LAGSERVE_CUDA_CHECK(cudaFuncSetAttribute(sampling_kernel<kDraw>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(smem)));
  }
  sampling_kernel<kDraw><<<static_cast<unsigned>(n_rows), kThreads, smem, stream>>>(
      logits, vocab, params, lists, u, processed, tokens);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

// Greedy rows, wide: each CTA takes the argmax of a slice of a row and folds
// it into the row's 64-bit key (order-preserving value bits, then the
// complement of the id, so that the larger value and then the lower id win).
constexpr int kArgmaxThreads = 256;
constexpr int kArgmaxPerThread = 16;

__device__ __forceinline__ unsigned long long argmax_key(float v, int32_t i) {
  const uint32_t b = __float_as_uint(v);
  const uint32_t ordered = (b & 0x80000000u) != 0 ? ~b : (b | 0x80000000u);
  return (static_cast<unsigned long long>(ordered) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

__global__ __launch_bounds__(kArgmaxThreads) void argmax_slices_kernel(
    const float* logits, int32_t vocab, unsigned long long* keys) {
  const int32_t row = blockIdx.y;
  const int64_t slice = static_cast<int64_t>(kArgmaxThreads) * kArgmaxPerThread;
  const int32_t i0 = static_cast<int32_t>(blockIdx.x * slice);
  const float* x = logits + static_cast<int64_t>(row) * vocab;
  unsigned long long best = 0;
  for (int32_t k = 0; k < kArgmaxPerThread; ++k) {
    const int32_t i = i0 + k * kArgmaxThreads + threadIdx.x;
    if (i < vocab) best = max(best, argmax_key(__ldg(x + i), i));
  }
  for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
  __shared__ unsigned long long warp_best[kArgmaxThreads / 32];
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgmaxThreads / 32; ++w) best = max(best, warp_best[w]);
    atomicMax(keys + row, best);
  }
}

__global__ void argmax_tokens_kernel(const unsigned long long* keys, int32_t n_rows, int32_t* tokens) {
  const int32_t row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row < n_rows) tokens[row] = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(keys[row]));
}

}  // namespace

void sampling_argmax(const float* logits, int32_t n_rows, int32_t vocab, unsigned long long* keys,
                     int32_t* tokens, cudaStream_t stream) {
  if (n_rows <= 0) return;
  if (vocab < 1) {
    std::fprintf(stderr, "lagserve: sampling_argmax needs vocab >= 1, got %d\n", vocab);
    std::abort();
  }
  LAGSERVE_CUDA_CHECK(cudaMemsetAsync(keys, 0, n_rows * sizeof(unsigned long long), stream));
  const dim3 grid(blocks_for(vocab, kArgmaxThreads * kArgmaxPerThread), static_cast<unsigned>(n_rows));
  argmax_slices_kernel<<<grid, kArgmaxThreads, 0, stream>>>(logits, vocab, keys);
  LAGSERVE_CUDA_CHECK_LAUNCH();
  argmax_tokens_kernel<<<blocks_for(n_rows, 256), 256, 0, stream>>>(keys, n_rows, tokens);
  LAGSERVE_CUDA_CHECK_LAUNCH();
}

void sampling_process_logits(const float* logits, int32_t n_rows, int32_t vocab,
                             const SamplingRowParams* params, const SamplingTokenLists& lists,
                             float* processed, cudaStream_t stream) {
  launch<false>(logits, n_rows, vocab, params, lists, nullptr, processed, nullptr, stream);
}

void sampling_sample(const float* logits, int32_t n_rows, int32_t vocab,
                     const SamplingRowParams* params, const SamplingTokenLists& lists,
                     const float* u, float* processed, int32_t* tokens, cudaStream_t stream) {
  launch<true>(logits, n_rows, vocab, params, lists, u, processed, tokens, stream);
}

}  // namespace lagserve::kernels::cuda
