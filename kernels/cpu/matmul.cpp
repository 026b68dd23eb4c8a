// matmul_nt over OpenBLAS's cblas_sgemm / cblas_sgemv (see blas.h).
#include "kernels/cpu/matmul.h"

#include "kernels/cpu/blas.h"

namespace lagserve::kernels {
namespace {

// CBLAS enum values (cblas.h).
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

int i32(int64_t v) { return static_cast<int>(v); }

}  // namespace

void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
               bool accumulate) {
  if (m == 1) {
    // NOTE: sgemv on a row-major [n, k] matrix streams W once; sgemm with m=1
    // takes a slower packing path in OpenBLAS.
    blas().sgemv(kRowMajor, kNoTrans, i32(n), i32(k), 1.0f, w, i32(k), x, 1,
                 accumulate ? 1.0f : 0.0f, y, 1);
    return;
  }
  blas().sgemm(kRowMajor, kNoTrans, kTrans, i32(m), i32(n), i32(k), 1.0f, x, i32(k), w, i32(k),
               accumulate ? 1.0f : 0.0f, y, i32(n));
}

void matmul_nt_strided(const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                       int64_t ldy, int64_t m, int64_t n, int64_t k, float alpha) {
  blas().sgemm(kRowMajor, kNoTrans, kTrans, i32(m), i32(n), i32(k), alpha, x, i32(ldx), w,
               i32(ldw), 0.0f, y, i32(ldy));
}

void matmul_nn_strided(const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                       int64_t ldy, int64_t m, int64_t n, int64_t k) {
  blas().sgemm(kRowMajor, kNoTrans, kNoTrans, i32(m), i32(n), i32(k), 1.0f, x, i32(ldx), w,
               i32(ldw), 0.0f, y, i32(ldy));
}

void matmul_nt_reference(const float* x, const float* w, float* y, int64_t m, int64_t n,
                         int64_t k, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < k; ++t) acc += static_cast<double>(x[i * k + t]) * w[j * k + t];
      y[i * n + j] = static_cast<float>(acc + (accumulate ? y[i * n + j] : 0.0));
    }
  }
}

void matmul_set_threads(int n_threads) { blas().set_num_threads(n_threads); }

}  // namespace lagserve::kernels
