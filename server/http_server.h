// The OpenAI-compatible HTTP front end (cpp-httplib): routes, API key,
// body limit, error bodies, and the lifecycle (bind first, so that /health
// answers 503 while the model loads).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace lagserve::server {

class ServingCore;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                            // 0: a free port (see port())
  std::optional<std::string> api_key;         // required on every path but /health when set
  size_t max_body_bytes = 8u << 20;           // larger bodies get 413
  int n_threads = 256;                        // connections served at once (streams hold one)
};

class HttpServer {
 public:
  HttpServer(ServingCore& core, HttpOptions options);
  ~HttpServer();

  // Binds the socket; an error names the address.
  absl::Status bind();
  int port() const { return port_; }
  // Serves on a background thread until stop().
  void start();
  // Stops accepting and waits for the handlers in flight to return (cancel
  // their calls first to make that quick).
  void stop();

 private:
  void add_routes();

  ServingCore& core_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  int listen_fd_ = -1;
};

}  // namespace lagserve::server
