// Programmatic dependent launch (sm_90): a kernel launched with launch_pdl
// may start while the kernel before it in the stream is still running, so
// that its blocks are resident and its first weight loads are out when that
// kernel ends. The contract of such a kernel:
//   - before pdl_wait() it reads only memory no kernel writes (weights) and
//     writes nothing;
//   - pdl_wait() returns once the kernel before it has finished and its
//     writes are visible (and so, transitively, every kernel before that,
//     since every block of every such kernel calls pdl_wait before it exits);
//   - pdl_release() lets the next kernel start early; called first thing.
// Both are no-ops without a programmatic dependency and below sm_90, and a
// kernel launched the ordinary way still waits for the whole stream.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::kernels::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// Whether launch_pdl overlaps launches: on sm_90 and newer unless the
// environment sets LAGSERVE_CUDA_PDL=0. Read once per process.
bool pdl_enabled();

// Launches kernel<<<grid, block, smem, stream>>>(args...), allowed to overlap
// the kernel before it when pdl_enabled() (never on the legacy default
// stream, nullptr).
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = stream != nullptr && pdl_enabled() ? 1 : 0;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  LAGSERVE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace lagserve::kernels::cuda
