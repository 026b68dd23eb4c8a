// OpenBLAS, loaded at first use. Before loading, when OPENBLAS_CORETYPE is not
// set, the kernel family is chosen from what the CPU and OS support
// (AVX-512 -> SkylakeX, AVX2+FMA -> Haswell): OpenBLAS's own model-number
// detection falls back to its slowest (SSE3) kernels on CPUs it does not know,
// such as virtualised Xeons, which costs 3x in prefill.
#pragma once

#include <string>

namespace lagserve::kernels {

struct Blas {
  // cblas_sgemm / cblas_sgemv with CBLAS enum values as ints.
  void (*sgemm)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc);
  void (*sgemv)(int order, int trans, int m, int n, float alpha, const float* a, int lda,
                const float* x, int incx, float beta, float* y, int incy);
  void (*set_num_threads)(int n);
  char* (*get_corename)();
};

// The loaded library; aborts with a message if libopenblas.so.0 is missing.
const Blas& blas();

// The kernel family OpenBLAS runs ("SkylakeX", "Haswell", ...).
std::string blas_corename();

}  // namespace lagserve::kernels
