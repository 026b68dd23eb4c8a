#include "engine/backend/cuda/tensor_parallel.h"

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <tuple>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "engine/backend/cuda/tp_comm.h"
#include "engine/model/model_shard.h"
#include "kernels/cuda/cuda_check.h"

namespace lagserve::backend {
namespace {

// A thread bound to one GPU that runs one job at a time: a rank's CUDA calls
// all come from its thread (the current device is per thread, and NCCL's
// collectives block until every rank has called them).
class RankThread {
 public:
  explicit RankThread(int device) : thread_([this, device] { loop(device); }) {}
  RankThread(const RankThread&) = delete;
  RankThread& operator=(const RankThread&) = delete;
  ~RankThread() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      job_ = std::move(job);
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !job_; });
  }

 private:
  void loop(int device) {
    const cudaError_t err = cudaSetDevice(device);
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || job_; });
      if (!job_) return;  // stopping
      std::function<void()> job = job_;
      lock.unlock();
      if (err == cudaSuccess) job();  // else the job's own cudaSetDevice reports it
      lock.lock();
      job_ = nullptr;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool stop_ = false;
  std::thread thread_;  // last: it starts once the rest is built
};

class TensorParallelBackend final : public Backend {
 public:
  TensorParallelBackend(const model::ModelConfig& config, int32_t block_size,
                        std::vector<std::unique_ptr<cuda::TpComm>> comms, std::vector<int> devices)
      : cfg_(config), block_size_(block_size), devices_(std::move(devices)), comms_(std::move(comms)),
        ranks_(devices_.size()) {
    for (int d : devices_) threads_.push_back(std::make_unique<RankThread>(d));
  }
  ~TensorParallelBackend() override {
    // Each rank's CUDA resources go on its own thread, before the comms.
    on_every_rank([&](size_t r) { ranks_[r].reset(); });
    comms_.clear();
  }

  // Builds each rank's shard and backend on its thread.
  absl::Status init(const model::Model& model, const CudaBackendOptions& options) {
    const int32_t n = size();
    std::vector<absl::Status> status(n);
    on_every_rank([&](size_t r) {
      auto shard = model::shard_model(model, static_cast<int32_t>(r), n);
      if (!shard.ok()) {
        status[r] = shard.status();
        return;
      }
      CudaBackendOptions opt = options;
      opt.device = devices_[r];
      opt.tp_comm = comms_[r].get();
      if (r != 0) opt.step_times = nullptr;  // rank 0's, whose waits hold the all-reduces
      auto be = make_cuda_backend(**shard, opt);
      if (!be.ok()) {
        status[r] = absl::Status(be.status().code(),
                                 fmt::format("tensor parallel rank {}: {}", r, std::string(be.status().message())));
        return;
      }
      ranks_[r] = std::move(*be);
    });
    for (const absl::Status& st : status) {
      if (!st.ok()) return st;
    }
    n_blocks_ = ranks_[0]->n_blocks();
    for (const auto& be : ranks_) n_blocks_ = std::min(n_blocks_, be->n_blocks());
    return absl::OkStatus();
  }

  const model::ModelConfig& config() const override { return cfg_; }
  int32_t block_size() const override { return block_size_; }
  int32_t n_blocks() const override { return n_blocks_; }
  bool samples_on_device() const override { return true; }

  // Every rank runs the step (a bad step fails on all of them alike, before
  // any launch); rank 0's output, with every rank's evictions under their
  // global KV head numbers.
  absl::StatusOr<StepOutput> step(const StepBatch& batch) override {
    StepBatch others = batch;
    for (SequenceStep& s : others.seqs) {
      s.sampling = nullptr;
      s.need_logits = false;
    }
    std::vector<absl::StatusOr<StepOutput>> outs(ranks_.size(), absl::UnknownError("not run"));
    on_every_rank([&](size_t r) { outs[r] = ranks_[r]->step(r == 0 ? batch : others); });
    for (const auto& o : outs) {
      if (!o.ok()) return o.status();
    }
    StepOutput out = std::move(*outs[0]);
    for (size_t r = 1; r < outs.size(); ++r) {
      const model::KvHeadShare share = model::kv_heads_of_rank(cfg_, static_cast<int32_t>(r), size());
      if (!share.primary) continue;  // a replica of a lower rank's heads
      for (EvictionRecord& e : outs[r]->evictions) {
        e.kv_head += share.first;
        out.evictions.push_back(std::move(e));
      }
    }
    if (outs.size() > 1) {
      std::stable_sort(out.evictions.begin(), out.evictions.end(), [](const EvictionRecord& a, const EvictionRecord& b) {
        return std::tie(a.seq, a.layer, a.kv_head, a.partition) < std::tie(b.seq, b.layer, b.kv_head, b.partition);
      });
    }
    return out;
  }

 private:
  int32_t size() const { return static_cast<int32_t>(ranks_.size()); }
  void on_every_rank(const std::function<void(size_t)>& job) {
    for (size_t r = 0; r < threads_.size(); ++r) threads_[r]->post([&job, r] { job(r); });
    for (auto& t : threads_) t->wait();
  }

  model::ModelConfig cfg_;
  int32_t block_size_;
  int32_t n_blocks_ = 0;
  std::vector<int> devices_;
  std::vector<std::unique_ptr<cuda::TpComm>> comms_;
  std::vector<std::unique_ptr<Backend>> ranks_;
  std::vector<std::unique_ptr<RankThread>> threads_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> make_tensor_parallel_backend(const model::Model& model,
                                                                      const CudaBackendOptions& options,
                                                                      const TensorParallelOptions& tp) {
  if (absl::Status st = model::check_tensor_parallel(model.config, tp.size); !st.ok()) return st;
  int n_devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&n_devices);
  if (err != cudaSuccess || n_devices == 0) {
    return absl::UnavailableError(fmt::format("no CUDA device ({})", cudaGetErrorString(err)));
  }
  std::vector<int> devices;
  std::vector<std::unique_ptr<cuda::TpComm>> comms;
  if (tp.single_device) {
    if (tp.size > 8) return absl::InvalidArgumentError("at most 8 ranks on one device");
    if (options.kv_cache_bytes <= 0) {
      return absl::InvalidArgumentError("ranks sharing one device need kv_cache_bytes (each sizes its own cache)");
    }
    devices.assign(tp.size, options.device);
    comms = cuda::make_single_device_comms(tp.size);
  } else {
    if (options.device < 0 || options.device + tp.size > n_devices) {
      return absl::InvalidArgumentError(fmt::format(
          "tensor parallel size {} from device {} needs devices {} to {}, and {} {} present",
          tp.size, options.device, options.device, options.device + tp.size - 1, n_devices,
          n_devices == 1 ? "is" : "are"));
    }
    for (int r = 0; r < tp.size; ++r) devices.push_back(options.device + r);
    int current = 0;
    LAGSERVE_CUDA_CHECK(cudaGetDevice(&current));
    auto made = cuda::make_nccl_comms(devices);
    LAGSERVE_CUDA_CHECK(cudaSetDevice(current));
    if (!made.ok()) return made.status();
    comms = std::move(*made);
  }
  auto be = std::make_unique<TensorParallelBackend>(model.config, options.block_size, std::move(comms), devices);
  if (absl::Status st = be->init(model, options); !st.ok()) return st;
  return std::unique_ptr<Backend>(std::move(be));
}

}  // namespace lagserve::backend
