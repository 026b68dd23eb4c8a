// Programmatic dependent launch (sm_90+): a kernel launched with launch_pdl
// may be scheduled while its predecessor in the stream is still running, so
// that a chain of small kernels (a decode step) does not pay the full launch
// gap between each pair. Such a kernel must call pdl_wait() before it touches
// global memory (it returns once the predecessor has completed and its writes
// are visible), and calls pdl_launch_dependents() to let its own successor be
// scheduled early. On older GPUs, or with LAGSERVE_CUDA_PDL=0 in the
// environment, launch_pdl is a plain launch and both calls do nothing.
#pragma once

#include <cstdlib>
#include <cstring>
#include <utility>

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launches of this process use PDL (the current device, once).
inline bool pdl_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("LAGSERVE_CUDA_PDL");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
    return major >= 9;
  }();
  return enabled;
}

template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  LAGSERVE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace lagserve::kernels::cuda
