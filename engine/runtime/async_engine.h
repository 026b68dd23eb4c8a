// AsyncEngine: the Engine on its own thread, behind a thread-safe API. Each
// submitted request (or group of requests, e.g. the n choices of one API
// call) gets a RequestStream of outputs; cancelling it aborts them at the
// next step.
#pragma once

#include <chrono>
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

// The outputs of one request or of a group of requests, in the order the
// engine produced them (RequestOutput::id tells them apart).
class RequestStream {
 public:
  // Blocks until the next output; nullopt once every request of the stream
  // has finished and every output was read.
  std::optional<RequestOutput> next();
  enum class Poll { Output, Timeout, Done };
  // Waits at most `timeout` for the next output (Output: stored in *out).
  Poll next_for(std::chrono::milliseconds timeout, RequestOutput* out);
  // Asks the engine to abort the stream's requests; each then ends with an
  // output whose finish is Abort. Safe to call more than once.
  void cancel();
  const std::vector<std::string>& ids() const { return ids_; }

 private:
  friend class AsyncEngine;
  RequestStream(AsyncEngine* engine, std::vector<std::string> ids)
      : engine_(engine), ids_(std::move(ids)), open_(static_cast<int>(ids_.size())) {}
  void push(RequestOutput out);

  AsyncEngine* engine_;
  const std::vector<std::string> ids_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  int open_;  // requests not finished yet
};

class AsyncEngine {
 public:
  // Starts the engine thread.
  explicit AsyncEngine(std::unique_ptr<Engine> engine);
  // Stops the thread; requests still running are aborted.
  ~AsyncEngine();

  // Validates and queues a request; the stream delivers its outputs.
  absl::StatusOr<std::shared_ptr<RequestStream>> submit(Request request);
  // Validates every request, then queues them all (or none) behind one stream.
  absl::StatusOr<std::shared_ptr<RequestStream>> submit_group(std::vector<Request> requests);
  void cancel(const std::string& id);
  // Cancels every request submitted and not finished.
  void cancel_all();
  EngineStats stats() const;
  // The engine's checks, for callers that want them before submitting.
  absl::Status validate(const Request& request) const { return engine_->validate(request); }

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
