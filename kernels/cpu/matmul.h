// y = x W^T (+ y): the one GEMM shape of the forward pass, through OpenBLAS.
#pragma once

#include <cstdint>

namespace lagserve::kernels {

// x: [m, k] row-major; w: [n, k] row-major (a PyTorch Linear weight);
// y: [m, n] row-major. With accumulate, y += x W^T, else y = x W^T.
void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
               bool accumulate = false);

// Plain triple loop, for tests.
void matmul_nt_reference(const float* x, const float* w, float* y, int64_t m, int64_t n,
                         int64_t k, bool accumulate = false);

// Sets OpenBLAS's thread count (the forward pass calls this once).
void matmul_set_threads(int n_threads);

}  // namespace lagserve::kernels
