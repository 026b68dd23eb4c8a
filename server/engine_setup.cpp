// make_engine_parts: model, backend, policy.
#include "server/engine_setup.h"

#include <thread>

#include <fmt/format.h>

#include "engine/backend/cpu/cpu_backend.h"
#ifdef LAGSERVE_HAVE_CUDA
#include "engine/backend/cuda/cuda_backend.h"
#include "engine/backend/cuda/tensor_parallel.h"
#endif
#include "engine/common/status_macros.h"

namespace lagserve::cli {

absl::StatusOr<std::string> resolve_device(const std::string& device) {
#ifdef LAGSERVE_HAVE_CUDA
  const bool have_cuda = backend::cuda_available();
#else
  const bool have_cuda = false;
#endif
  if (device == "auto" || device.empty()) return std::string(have_cuda ? "cuda" : "cpu");
  if (device == "cpu") return device;
  if (device == "cuda") {
#ifndef LAGSERVE_HAVE_CUDA
    return absl::UnavailableError("--device cuda: this lagserve was built without CUDA");
#endif
    if (!have_cuda) return absl::UnavailableError("--device cuda: no CUDA device is present");
    return device;
  }
  return absl::InvalidArgumentError(
      fmt::format("unknown device '{}': expected cpu, cuda or auto", device));
}

absl::StatusOr<EngineParts> make_engine_parts(const EngineArgs& args) {
  EngineParts parts;
  if (!args.lagkv.empty()) {  // parse first: a bad flag should not wait for the model
    LAGSERVE_ASSIGN_OR_RETURN(parts.config.default_policy, kv::LagPolicy::parse(args.lagkv));
  }
  // Before the model: a bad flag should not wait for it.
  LAGSERVE_ASSIGN_OR_RETURN(parts.device, resolve_device(args.device));
  if (args.tensor_parallel_size != 1 && parts.device != "cuda") {
    return absl::InvalidArgumentError(fmt::format(
        "--tensor-parallel-size {}: tensor parallelism needs --device cuda", args.tensor_parallel_size));
  }
  LAGSERVE_ASSIGN_OR_RETURN(parts.model, model::load_model(args.model));
  if (args.lagkv.empty()) {
    LAGSERVE_ASSIGN_OR_RETURN(std::optional<kv::LagPolicy> p, kv::lag_policy_from_model(*parts.model));
    if (p) parts.config.default_policy = *p;
  }
  parts.n_threads = args.threads > 0
                        ? args.threads
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (parts.device == "cuda") {
#ifdef LAGSERVE_HAVE_CUDA
    backend::CudaBackendOptions opt;
    opt.kv_cache_bytes = static_cast<int64_t>(args.kv_cache_mb) << 20;
    opt.gpu_memory_utilization = args.gpu_memory_utilization;
    opt.max_batched_tokens = args.max_batched_tokens;
    opt.max_seqs = args.max_seqs;
    if (args.tensor_parallel_size == 1) {
      LAGSERVE_ASSIGN_OR_RETURN(parts.backend, backend::make_cuda_backend(*parts.model, opt));
    } else {
      backend::TensorParallelOptions tp;
      tp.size = args.tensor_parallel_size;
      LAGSERVE_ASSIGN_OR_RETURN(parts.backend, backend::make_tensor_parallel_backend(*parts.model, opt, tp));
    }
#endif
  } else {
    backend::CpuBackendOptions opt;
    opt.n_threads = parts.n_threads;
    opt.kv_cache_bytes = static_cast<int64_t>(args.kv_cache_mb > 0 ? args.kv_cache_mb : 1024) << 20;
    LAGSERVE_ASSIGN_OR_RETURN(parts.backend, backend::make_cpu_backend(*parts.model, opt));
  }
  parts.config.max_batched_tokens = args.max_batched_tokens;
  parts.config.max_seqs = args.max_seqs;
  parts.config.seed = args.seed;
  return parts;
}

}  // namespace lagserve::cli
