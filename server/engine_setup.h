// Builds what every serving entry point needs: the model, the backend (CPU or
// CUDA) and
// the engine configuration, with the KV policy resolved (flag, else the
// checkpoint's, else off).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/backend.h"
#include "engine/kv/lag_policy.h"
#include "engine/model/model.h"
#include "engine/runtime/engine.h"

namespace lagserve::cli {

struct EngineArgs {
  std::string model = "default";
  int threads = 0;         // 0: all cores
  std::string device = "auto";  // "auto" (cuda when built and present), "cpu", "cuda"
  int kv_cache_mb = 0;           // 0: 1024 on the CPU, from gpu_memory_utilization on CUDA
  double gpu_memory_utilization = 0.9;
  int tensor_parallel_size = 1;  // GPUs one model is sharded over (cuda)
  std::string lagkv;       // "" (checkpoint's policy, else off), "off", or "sink=..,lag=..,ratio=.."
  int max_batched_tokens = 2048;
  int max_seqs = 64;
  uint64_t seed = 0;
};

struct EngineParts {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<backend::Backend> backend;
  runtime::EngineConfig config;
  int n_threads = 1;
  std::string device;  // "cpu" or "cuda", as resolved
};

// "auto" -> "cuda" when this build has CUDA and a device is present, else
// "cpu"; "cuda" without either is an error that says which is missing.
absl::StatusOr<std::string> resolve_device(const std::string& device);

absl::StatusOr<EngineParts> make_engine_parts(const EngineArgs& args);

}  // namespace lagserve::cli
