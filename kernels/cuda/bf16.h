// The GPU's storage type for weights, the KV cache and GEMM inputs.
#pragma once

#include <cuda_bf16.h>

namespace lagserve::kernels::cuda {
using bf16 = __nv_bfloat16;
}  // namespace lagserve::kernels::cuda
