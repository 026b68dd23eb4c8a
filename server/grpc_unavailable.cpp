// GrpcServer in a build without gRPC (-DLAGSERVE_GRPC=OFF, chosen by
// server/CMakeLists.txt in place of grpc_service.cpp): start() always fails,
// so `lagserve serve` runs with HTTP alone.
#include "server/grpc_service.h"

#include "absl/status/status.h"

namespace lagserve::server {

// Never constructed: start() is the only way to a GrpcServer.
struct GrpcServer::Impl {};

bool GrpcServer::built_in() { return false; }

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() = default;

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::start(ServingCore& /*core*/,
                                                              const GrpcOptions& /*options*/) {
  return absl::UnimplementedError("this lagserve was built without gRPC (-DLAGSERVE_GRPC=OFF)");
}

int GrpcServer::port() const { return -1; }

void GrpcServer::set_serving(bool /*serving*/) {}

void GrpcServer::shutdown(std::chrono::system_clock::time_point /*deadline*/) {}

}  // namespace lagserve::server
