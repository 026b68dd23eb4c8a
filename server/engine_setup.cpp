// make_engine_parts: model, backend, policy.
#include "server/engine_setup.h"

#include <thread>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/common/status_macros.h"

namespace lagserve::cli {

absl::StatusOr<EngineParts> make_engine_parts(const EngineArgs& args) {
  EngineParts parts;
  if (!args.lagkv.empty()) {  // parse first: a bad flag should not wait for the model
    LAGSERVE_ASSIGN_OR_RETURN(parts.config.default_policy, kv::LagPolicy::parse(args.lagkv));
  }
  LAGSERVE_ASSIGN_OR_RETURN(parts.model, model::load_model(args.model));
  if (args.lagkv.empty()) {
    LAGSERVE_ASSIGN_OR_RETURN(std::optional<kv::LagPolicy> p, kv::lag_policy_from_model(*parts.model));
    if (p) parts.config.default_policy = *p;
  }
  backend::CpuBackendOptions opt;
  parts.n_threads = args.threads > 0
                        ? args.threads
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  opt.n_threads = parts.n_threads;
  opt.kv_cache_bytes = static_cast<int64_t>(args.kv_cache_mb) << 20;
  LAGSERVE_ASSIGN_OR_RETURN(parts.backend, backend::make_cpu_backend(*parts.model, opt));
  parts.config.max_batched_tokens = args.max_batched_tokens;
  parts.config.max_seqs = args.max_seqs;
  parts.config.seed = args.seed;
  return parts;
}

}  // namespace lagserve::cli
