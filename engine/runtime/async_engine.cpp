// AsyncEngine: one thread owns the Engine; clients talk to it through queues.
#include "engine/runtime/async_engine.h"

#include <fmt/format.h>

#include <algorithm>

namespace lagserve::runtime {

std::optional<RequestOutput> RequestStream::next() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || open_ == 0; });
  if (queue_.empty()) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

RequestStream::Poll RequestStream::next_for(std::chrono::milliseconds timeout,
                                            RequestOutput* out) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !queue_.empty() || open_ == 0; })) {
    return Poll::Timeout;
  }
  if (queue_.empty()) return Poll::Done;
  *out = std::move(queue_.front());
  queue_.pop_front();
  return Poll::Output;
}

void RequestStream::cancel() {
  for (const std::string& id : ids_) engine_->cancel(id);
}

void RequestStream::push(RequestOutput out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (out.finished()) --open_;
    queue_.push_back(std::move(out));
  }
  cv_.notify_all();
}

AsyncEngine::AsyncEngine(std::unique_ptr<Engine> engine)
    : engine_(std::move(engine)), thread_([this] { loop(); }) {}

AsyncEngine::~AsyncEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

absl::StatusOr<std::shared_ptr<RequestStream>> AsyncEngine::submit(Request request) {
  std::vector<Request> group;
  group.push_back(std::move(request));
  return submit_group(std::move(group));
}

absl::StatusOr<std::shared_ptr<RequestStream>> AsyncEngine::submit_group(
    std::vector<Request> requests) {
  if (requests.empty()) return absl::InvalidArgumentError("no requests to submit");
  std::vector<std::string> ids;
  for (const Request& r : requests) {
    if (absl::Status s = engine_->validate(r); !s.ok()) return s;
    if (std::find(ids.begin(), ids.end(), r.id) != ids.end()) {
      return absl::AlreadyExistsError(fmt::format("request id '{}' appears twice", r.id));
    }
    ids.push_back(r.id);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return absl::UnavailableError("the engine is shutting down");
  for (const std::string& id : ids) {
    if (streams_.count(id)) {
      return absl::AlreadyExistsError(fmt::format("request id '{}' is already running", id));
    }
  }
  auto stream = std::shared_ptr<RequestStream>(new RequestStream(this, std::move(ids)));
  for (Request& r : requests) {
    streams_.emplace(r.id, stream);
    inbox_.push_back(std::move(r));
  }
  wake_.notify_all();
  return stream;
}

void AsyncEngine::cancel(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  wake_.notify_all();
}

void AsyncEngine::cancel_all() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, stream] : streams_) cancels_.push_back(id);
  }
  wake_.notify_all();
}

EngineStats AsyncEngine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void AsyncEngine::loop() {
  for (;;) {
    std::vector<Request> inbox;
    std::vector<std::string> cancels;
    bool stopping;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stop_ || !inbox_.empty() || !cancels_.empty() || engine_->has_work();
      });
      inbox.swap(inbox_);
      cancels.swap(cancels_);
      stopping = stop_;
    }
    std::vector<RequestOutput> failed;
    for (Request& r : inbox) {
      const std::string id = r.id;
      if (absl::Status s = engine_->add_request(std::move(r)); !s.ok()) {
        RequestOutput out;
        out.id = id;
        out.finish = FinishReason::Abort;
        out.error = std::string(s.message());
        failed.push_back(std::move(out));
      }
    }
    if (stopping) {
      for (auto& [id, stream] : streams_) engine_->abort_request(id);
    }
    for (const std::string& id : cancels) engine_->abort_request(id);
    absl::StatusOr<std::vector<RequestOutput>> outputs = engine_->step();
    if (!outputs.ok()) {
      // A backend failure is not one request's fault; abort everything.
      for (auto& [id, stream] : streams_) engine_->abort_request(id);
      outputs = engine_->step();
      if (outputs.ok()) {
        for (RequestOutput& o : *outputs) o.error = "engine step failed";
      }
    }
    std::vector<RequestOutput> all = std::move(failed);
    if (outputs.ok()) {
      for (RequestOutput& o : *outputs) all.push_back(std::move(o));
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (RequestOutput& o : all) {
      auto it = streams_.find(o.id);
      if (it == streams_.end()) continue;
      const bool finished = o.finished();
      it->second->push(std::move(o));
      if (finished) streams_.erase(it);
    }
    stats_ = engine_->stats();
    if (stopping && streams_.empty()) return;
  }
}

}  // namespace lagserve::runtime
