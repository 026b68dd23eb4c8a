// `lagserve serve`: binds HTTP and gRPC first (health says 503 / NOT_SERVING
// while the model loads), loads, serves, and on SIGTERM or SIGINT drains:
// new calls get 503, running ones finish until the drain timeout, exit 0.
// A build without gRPC (-DLAGSERVE_GRPC=OFF) serves HTTP alone.
#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <thread>

#include "server/cli.h"
#include "server/grpc_service.h"
#include "server/http_server.h"
#include "server/serving.h"

namespace lagserve::cli {
namespace {

absl::StatusOr<std::optional<std::string>> read_api_key(const ServeArgs& args) {
  if (!args.api_key.empty() && !args.api_key_file.empty()) {
    return absl::InvalidArgumentError("give --api-key or --api-key-file, not both");
  }
  if (!args.api_key.empty()) return args.api_key;
  if (args.api_key_file.empty()) return std::nullopt;
  std::ifstream in(args.api_key_file);
  std::string key;
  if (!in || !std::getline(in, key)) {
    return absl::InvalidArgumentError("cannot read an API key from " + args.api_key_file);
  }
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) return absl::InvalidArgumentError(args.api_key_file + " holds an empty API key");
  return key;
}

// Blocks SIGTERM and SIGINT in this thread and every thread started after,
// so that only wait_for_signal() sees them.
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

// Waits until no call is live or `seconds` have passed; returns the calls left.
int64_t wait_idle(const server::ServingCore& core, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(seconds));
  while (core.n_live() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return core.n_live();
}

}  // namespace

int run_serve(const ServeArgs& args) {
  spdlog::set_level(spdlog::level::from_str(args.log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  if (args.grpc_port >= 0 && !server::GrpcServer::built_in()) {
    return fail(absl::UnimplementedError(
        fmt::format("--grpc-port {}: this lagserve was built without gRPC (-DLAGSERVE_GRPC=OFF); "
                    "leave the flag out or pass -1",
                    args.grpc_port)));
  }
  absl::StatusOr<std::optional<std::string>> api_key = read_api_key(args);
  if (!api_key.ok()) return fail(api_key.status());
  const sigset_t stop_signals = block_stop_signals();

  server::ServingCore core(args.core);

  server::HttpOptions http_options;
  http_options.host = args.host;
  http_options.port = args.port;
  http_options.api_key = *api_key;
  http_options.max_body_bytes = static_cast<size_t>(args.max_body_mb) << 20;
  server::HttpServer http(core, http_options);
  if (absl::Status s = http.bind(); !s.ok()) return fail(s);
  http.start();
  std::unique_ptr<server::GrpcServer> grpc;
  if (args.grpc_port >= 0) {
    server::GrpcOptions grpc_options;
    grpc_options.host = args.host;
    grpc_options.port = args.grpc_port;
    grpc_options.api_key = *api_key;
    absl::StatusOr<std::unique_ptr<server::GrpcServer>> started =
        server::GrpcServer::start(core, grpc_options);
    if (!started.ok()) {
      http.stop();
      return fail(started.status());
    }
    grpc = std::move(*started);
  }
  spdlog::info("listening: http://{}:{}{}{}", args.host, http.port(),
               grpc ? fmt::format(", grpc {}:{}", args.host, grpc->port()) : std::string(),
               api_key->has_value() ? " (API key required)" : "");
  if (args.host != "127.0.0.1" && args.host != "localhost" && args.host != "::1" &&
      !api_key->has_value()) {
    spdlog::warn("listening on {} without an API key: anyone who reaches it can use it", args.host);
  }

  spdlog::info("loading model {}", args.core.engine.model);
  const auto t0 = std::chrono::steady_clock::now();
  if (absl::Status s = core.load(); !s.ok()) {
    if (grpc) grpc->shutdown(std::chrono::system_clock::now());
    http.stop();
    return fail(s);
  }
  if (grpc) grpc->set_serving(true);
  spdlog::info("ready: model '{}' ({} tokens of context, KV policy {}) loaded in {:.1f} s",
               core.model_name(), core.max_model_len(), core.default_policy().to_string(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  int signal = 0;
  sigwait(&stop_signals, &signal);
  spdlog::info("{}: draining ({} requests in flight, up to {:.0f} s)", strsignal(signal),
               core.n_live(), args.drain_timeout_s);
  core.start_draining();
  if (grpc) grpc->set_serving(false);
  const int64_t left = wait_idle(core, args.drain_timeout_s);
  if (left > 0) {  // the drain timed out: cancel, and give the engine a step to say so
    core.cancel_all();
    wait_idle(core, 10);
  }
  // The last responses are written after their requests finish: a moment for that.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  if (grpc) grpc->shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  http.stop();
  if (left > 0) {
    spdlog::warn("drain timeout: {} requests were cancelled", left);
  } else {
    spdlog::info("drained; bye");
  }
  return 0;
}

}  // namespace lagserve::cli
