// y = x W^T (+ y): the one GEMM shape of the forward pass, through OpenBLAS.
#pragma once

#include <cstdint>

namespace lagserve::kernels {

// x: [m, k] row-major; w: [n, k] row-major (a PyTorch Linear weight);
// y: [m, n] row-major. With accumulate, y += x W^T, else y = x W^T.
void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
               bool accumulate = false);

// General strided forms (leading dimensions in floats):
// y[m, n] = alpha * x[m, k] w[n, k]^T
void matmul_nt_strided(const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                       int64_t ldy, int64_t m, int64_t n, int64_t k, float alpha = 1.0f);
// y[m, n] = x[m, k] w[k, n]
void matmul_nn_strided(const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                       int64_t ldy, int64_t m, int64_t n, int64_t k);

// Plain triple loop, for tests.
void matmul_nt_reference(const float* x, const float* w, float* y, int64_t m, int64_t n,
                         int64_t k, bool accumulate = false);

// Sets OpenBLAS's thread count (the forward pass calls this once).
void matmul_set_threads(int n_threads);

}  // namespace lagserve::kernels
