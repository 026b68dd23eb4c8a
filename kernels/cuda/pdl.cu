// pdl_enabled(): whether launch_pdl overlaps launches (kernels/cuda/pdl.h).
#include "kernels/cuda/pdl.h"

#include <cstdlib>
#include <cstring>

namespace lagserve::kernels::cuda {

bool pdl_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("LAGSERVE_CUDA_PDL");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    int device = 0, major = 0;
    LAGSERVE_CUDA_CHECK(cudaGetDevice(&device));
    LAGSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    return major >= 9;
  }();
  return on;
}

}  // namespace lagserve::kernels::cuda
