// GrpcServer: the gRPC front end (lagserve.v1.LagServe and grpc.health.v1.Health)
// over a ServingCore. No gRPC types here; they stay in grpc_service.cpp (or, in
// builds with -DLAGSERVE_GRPC=OFF, grpc_unavailable.cpp, whose start() fails).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace lagserve::server {

class ServingCore;

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 50051;                    // 0: any free port (see GrpcServer::port)
  std::optional<std::string> api_key;  // set: LagServe calls need "authorization: Bearer <key>"
};

class GrpcServer {
 public:
  // False in a build without gRPC (-DLAGSERVE_GRPC=OFF): start() then always
  // fails with UnimplementedError.
  static bool built_in();
  // Builds and starts the server: the LagServe service and the standard
  // grpc.health.v1.Health service (which needs no API key). Health starts
  // NOT_SERVING unless the core is already Ready. Fails with a status naming
  // the address when it cannot bind. `core` must outlive the server.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> start(ServingCore& core,
                                                           const GrpcOptions& options);
  // Shuts down (cancelling running calls at once) if shutdown() was not called.
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The port it listens on (the chosen one when options.port was 0).
  int port() const;
  // Health status SERVING (true) or NOT_SERVING (false), for the server as a
  // whole ("") and for "lagserve.v1.LagServe".
  void set_serving(bool serving);
  // Stops accepting calls, lets running ones finish until `deadline`, then
  // cancels them; returns once every handler has returned. Later calls do nothing.
  void shutdown(std::chrono::system_clock::time_point deadline);

 private:
  struct Impl;
  explicit GrpcServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace lagserve::server
