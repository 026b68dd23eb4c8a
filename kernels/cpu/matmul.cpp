// matmul_nt over cblas_sgemm.
#include "kernels/cpu/matmul.h"

#include <cblas.h>

extern "C" void openblas_set_num_threads(int);

namespace lagserve::kernels {

void matmul_nt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
               bool accumulate) {
  if (m == 1) {
    // NOTE: sgemv on a row-major [n, k] matrix streams W once; sgemm with m=1
    // takes a slower packing path in OpenBLAS.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<blasint>(n), static_cast<blasint>(k),
                1.0f, w, static_cast<blasint>(k), x, 1, accumulate ? 1.0f : 0.0f, y, 1);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, x,
              static_cast<blasint>(k), w, static_cast<blasint>(k), accumulate ? 1.0f : 0.0f, y,
              static_cast<blasint>(n));
}

void matmul_nt_strided(const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                       int64_t ldy, int64_t m, int64_t n, int64_t k, float alpha) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, x,
              static_cast<blasint>(ldx), w, static_cast<blasint>(ldw), 0.0f, y,
              static_cast<blasint>(ldy));
}

void matmul_nn_strided(const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                       int64_t ldy, int64_t m, int64_t n, int64_t k) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, x,
              static_cast<blasint>(ldx), w, static_cast<blasint>(ldw), 0.0f, y,
              static_cast<blasint>(ldy));
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

void matmul_set_threads(int n_threads) { openblas_set_num_threads(n_threads); }

}  // namespace lagserve::kernels
