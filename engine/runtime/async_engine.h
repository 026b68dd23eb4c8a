// AsyncEngine: the Engine on its own thread, behind a thread-safe API. Each
// submitted request gets a RequestStream of outputs; cancelling it (or
// dropping it) aborts the request at the next step.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/runtime/engine.h"

namespace lagserve::runtime {

class AsyncEngine;

class RequestStream {
 public:
  // Blocks until the next output; nullopt once the request has finished and
  // every output was read.
  std::optional<RequestOutput> next();
  // Asks the engine to abort the request; the stream then ends with an
  // output whose finish is Abort.
  void cancel();

 private:
  friend class AsyncEngine;
  RequestStream(AsyncEngine* engine, std::string id) : engine_(engine), id_(std::move(id)) {}
  void push(RequestOutput out);

  AsyncEngine* engine_;
  std::string id_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  bool done_ = false;
};

class AsyncEngine {
 public:
  // Starts the engine thread.
  explicit AsyncEngine(std::unique_ptr<Engine> engine);
  // Stops the thread; requests still running are aborted.
  ~AsyncEngine();

  // Validates and queues a request; the stream delivers its outputs.
  absl::StatusOr<std::shared_ptr<RequestStream>> submit(Request request);
  void cancel(const std::string& id);
  EngineStats stats() const;

 private:
  void loop();

  std::unique_ptr<Engine> engine_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::vector<Request> inbox_;
  std::vector<std::string> cancels_;
  std::unordered_map<std::string, std::shared_ptr<RequestStream>> streams_;
  EngineStats stats_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace lagserve::runtime
