// The backend the engine tests run on: the CPU backend, or the CUDA backend
// when LAGSERVE_TEST_DEVICE=cuda (scripts/device/cuda_run.sh runs them so).
// The CUDA backend needs blocks of 16: smaller CPU blocks become 16, with the
// cache sized for twice the tokens (partly filled blocks of 16 waste more).
#pragma once

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/cpu/cpu_backend.h"
#ifdef LAGSERVE_HAVE_CUDA
#include "engine/backend/cuda/cuda_backend.h"
#endif

namespace lagserve::testing_util {

inline bool test_device_is_cuda() {
  const char* d = std::getenv("LAGSERVE_TEST_DEVICE");
  return d != nullptr && std::string(d) == "cuda";
}

inline absl::StatusOr<std::unique_ptr<backend::Backend>> make_test_backend(
    const model::Model& m, const backend::CpuBackendOptions& cpu) {
  if (!test_device_is_cuda()) return backend::make_cpu_backend(m, cpu);
#ifdef LAGSERVE_HAVE_CUDA
  backend::CudaBackendOptions opt;
  opt.block_size = 16;
  const int64_t tokens = cpu.kv_cache_bytes / backend::kv_bytes_per_token(m.config);
  opt.kv_cache_bytes = std::max<int64_t>(2 * tokens, 64) * backend::kv_bytes_per_token_bf16(m.config);
  opt.poison_kv = cpu.poison_kv;
  return backend::make_cuda_backend(m, opt);
#else
  return absl::UnavailableError("LAGSERVE_TEST_DEVICE=cuda, but this build has no CUDA backend");
#endif
}

}  // namespace lagserve::testing_util
