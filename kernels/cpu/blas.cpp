// blas(): dlopen("libopenblas.so.0") once, after setting OPENBLAS_CORETYPE
// from CPU features when the user has not set it.
#include "kernels/cpu/blas.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

namespace lagserve::kernels {
namespace {

// NOTE: __builtin_cpu_supports checks the OS-enabled register state too
// (XGETBV), so a VM that hides AVX-512 state is not given AVX-512 kernels.
const char* coretype_for_this_cpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;  // let OpenBLAS decide
}

template <typename F>
void load_symbol(void* lib, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  if (!out) {
    std::fprintf(stderr, "lagserve: OpenBLAS has no symbol %s\n", name);
    std::abort();
  }
}

Blas load() {
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  if (!forced || !*forced) {
    if (const char* core = coretype_for_this_cpu()) setenv("OPENBLAS_CORETYPE", core, 1);
  }
  void* lib = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "lagserve: cannot load OpenBLAS (%s); install libopenblas0\n", dlerror());
    std::abort();
  }
  Blas b{};
  load_symbol(lib, "cblas_sgemm", b.sgemm);
  load_symbol(lib, "cblas_sgemv", b.sgemv);
  load_symbol(lib, "openblas_set_num_threads", b.set_num_threads);
  load_symbol(lib, "openblas_get_corename", b.get_corename);
  return b;
}

}  // namespace

const Blas& blas() {
  static const Blas b = load();
  return b;
}

std::string blas_corename() {
  const char* name = blas().get_corename();
  return name ? name : "unknown";
}

}  // namespace lagserve::kernels
