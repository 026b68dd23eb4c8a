// Builds what every serving entry point needs: the model, the CPU backend and
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
  int kv_cache_mb = 1024;
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
};

absl::StatusOr<EngineParts> make_engine_parts(const EngineArgs& args);

}  // namespace lagserve::cli
