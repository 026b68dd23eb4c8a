// L2 prefetch of the next product's weights (sm_90). At a few rows a step's
// cuBLAS products are short, and each one's start and tail leave the memory
// idle; a kernel that runs before one of them (RMSNorm, the split merge,
// SwiGLU) can ask the L2 for that product's weights with bulk prefetches
// (cp.async.bulk.prefetch.L2: no registers, no completion to wait for), so
// that the product finds part of them in L2. A hint only: nothing reads the
// prefetch's result, and the outputs are the same bits with or without it.
#pragma once

#include <cstdint>

namespace lagserve::kernels::cuda {

// The first prefix_bytes of each of the rows of a row-major matrix whose rows
// are row_bytes apart; prefix_bytes == row_bytes: the whole matrix. base ==
// nullptr: nothing. base, row_bytes and prefix_bytes are multiples of 16.
struct L2Prefetch {
  const void* base = nullptr;
  int64_t rows = 0;
  int64_t row_bytes = 0;
  int64_t prefix_bytes = 0;
};

// What of a rows x row_bytes matrix fits in budget bytes: the whole matrix
// when it fits, else the same prefix of every row in whole 128-byte lines
// (products stream K from its start); nothing when not even one line a row
// fits, or when the matrix is not 16-byte aligned.
inline L2Prefetch l2_prefetch_rows(const void* base, int64_t rows, int64_t row_bytes, int64_t budget) {
  L2Prefetch p;
  if (base == nullptr || rows <= 0 || row_bytes <= 0 || budget <= 0 ||
      reinterpret_cast<uintptr_t>(base) % 16 != 0 || row_bytes % 16 != 0) {
    return p;
  }
  int64_t prefix = row_bytes;
  if (rows * row_bytes > budget) {
    prefix = budget / rows / 128 * 128;
    if (prefix == 0) return p;
  }
  p.base = base;
  p.rows = rows;
  p.row_bytes = row_bytes;
  p.prefix_bytes = prefix;
  return p;
}

#ifdef __CUDACC__
// Bytes per prefetch instruction when the whole matrix is asked for.
constexpr int64_t kL2PrefetchChunk = 8 * 1024;

// Issues block `block` of n_blocks' share of p, every thread of the block
// taking part: whole chunks of a contiguous matrix, else one row's prefix per
// instruction, dealt to the blocks in turn (chunk i to block i % n_blocks),
// so that a small matrix still goes through many SMs' copy units. A no-op
// below sm_90.
__device__ __forceinline__ void l2_prefetch(const L2Prefetch& p, int64_t block, int64_t n_blocks) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (p.base == nullptr) return;
  const auto base = static_cast<uint64_t>(__cvta_generic_to_global(p.base));
  const int64_t worker = threadIdx.x * n_blocks + block, n_workers = blockDim.x * n_blocks;
  if (p.prefix_bytes == p.row_bytes) {
    const int64_t total = p.rows * p.row_bytes;
    for (int64_t off = worker * kL2PrefetchChunk; off < total; off += n_workers * kL2PrefetchChunk) {
      const auto size = static_cast<uint32_t>(total - off < kL2PrefetchChunk ? total - off : kL2PrefetchChunk);
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(base + off), "r"(size));
    }
  } else {
    const auto size = static_cast<uint32_t>(p.prefix_bytes);
    for (int64_t r = worker; r < p.rows; r += n_workers) {
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(base + r * p.row_bytes), "r"(size));
    }
  }
#endif
}
#endif

}  // namespace lagserve::kernels::cuda
