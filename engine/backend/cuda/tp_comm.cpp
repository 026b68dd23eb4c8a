#include "engine/backend/cuda/tp_comm.h"

#include <barrier>

#include <fmt/format.h>

#ifdef LAGSERVE_HAVE_NCCL
#include <nccl.h>
#endif

#include "engine/backend/cuda/cuda_resources.h"
#include "engine/common/check.h"
#include "kernels/cuda/sum_buffers.h"

namespace lagserve::backend::cuda {
namespace {

#ifdef LAGSERVE_HAVE_NCCL
#define LAGSERVE_NCCL_CHECK(expr)                                                    \
  do {                                                                               \
    const ncclResult_t lagserve_nccl_ = (expr);                                      \
    LAGSERVE_CHECK(lagserve_nccl_ == ncclSuccess, "{} failed: {}", #expr,            \
                   ncclGetErrorString(lagserve_nccl_));                              \
  } while (0)

class NcclComm final : public TpComm {
 public:
  NcclComm(ncclComm_t comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}
  ~NcclComm() override { ncclCommDestroy(comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* buf, int64_t n, cudaStream_t stream) override {
    LAGSERVE_NCCL_CHECK(ncclAllReduce(buf, buf, static_cast<size_t>(n), ncclFloat32, ncclSum, comm_, stream));
  }
  bool graph_capturable() const override { return true; }

 private:
  ncclComm_t comm_;
  int rank_, size_;
};
#endif

// What the ranks of one device share: each one's buffer, two events each
// (its partial is ready; it has read every partial), and a barrier.
struct SharedState {
  explicit SharedState(int n) : ptrs(n), ready(n), summed(n), barrier(n) {
    for (int r = 0; r < n; ++r) {
      LAGSERVE_CUDA_CHECK(cudaEventCreateWithFlags(&ready[r], cudaEventDisableTiming));
      LAGSERVE_CUDA_CHECK(cudaEventCreateWithFlags(&summed[r], cudaEventDisableTiming));
    }
  }
  ~SharedState() {
    for (size_t r = 0; r < ready.size(); ++r) {
      cudaEventDestroy(ready[r]);
      cudaEventDestroy(summed[r]);
    }
  }
  std::vector<float*> ptrs;
  std::vector<cudaEvent_t> ready, summed;
  std::barrier<> barrier;
};

class SingleDeviceComm final : public TpComm {
 public:
  SingleDeviceComm(std::shared_ptr<SharedState> s, int rank) : s_(std::move(s)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(s_->ptrs.size()); }
  bool graph_capturable() const override { return false; }

  // Every rank sums all the buffers into its scratch, in rank order; once
  // every rank has summed, each copies its scratch over its buffer. (Event r
  // is recorded again only after every rank passed the barrier that follows
  // its waits on it.)
  void all_reduce_sum(float* buf, int64_t n, cudaStream_t stream) override {
    const int size = this->size();
    tmp_.reserve(n);
    s_->ptrs[rank_] = buf;
    LAGSERVE_CUDA_CHECK(cudaEventRecord(s_->ready[rank_], stream));
    s_->barrier.arrive_and_wait();
    for (int r = 0; r < size; ++r) LAGSERVE_CUDA_CHECK(cudaStreamWaitEvent(stream, s_->ready[r], 0));
    kernels::cuda::sum_buffers(s_->ptrs.data(), size, tmp_.get(), n, stream);
    LAGSERVE_CUDA_CHECK(cudaEventRecord(s_->summed[rank_], stream));
    s_->barrier.arrive_and_wait();
    for (int r = 0; r < size; ++r) LAGSERVE_CUDA_CHECK(cudaStreamWaitEvent(stream, s_->summed[r], 0));
    LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(buf, tmp_.get(), n * sizeof(float), cudaMemcpyDeviceToDevice, stream));
  }

 private:
  std::shared_ptr<SharedState> s_;
  int rank_;
  DeviceArray<float> tmp_;
};

}  // namespace

bool nccl_available() {
#ifdef LAGSERVE_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::vector<std::unique_ptr<TpComm>>> make_nccl_comms(const std::vector<int>& devices) {
#ifdef LAGSERVE_HAVE_NCCL
  const int n = static_cast<int>(devices.size());
  std::vector<ncclComm_t> comms(n);
  const ncclResult_t r = ncclCommInitAll(comms.data(), n, devices.data());
  if (r != ncclSuccess) {
    return absl::InternalError(fmt::format("NCCL could not join {} GPUs: {}", n, ncclGetErrorString(r)));
  }
  std::vector<std::unique_ptr<TpComm>> out;
  for (int i = 0; i < n; ++i) out.push_back(std::make_unique<NcclComm>(comms[i], i, n));
  return out;
#else
  (void)devices;
  return absl::UnimplementedError("tensor parallelism needs NCCL, and this lagserve was built without it");
#endif
}

std::vector<std::unique_ptr<TpComm>> make_single_device_comms(int n) {
  LAGSERVE_CHECK(n >= 1 && n <= kernels::cuda::kMaxSumBuffers, "{} ranks on one device", n);
  auto shared = std::make_shared<SharedState>(n);
  std::vector<std::unique_ptr<TpComm>> out;
  for (int i = 0; i < n; ++i) out.push_back(std::make_unique<SingleDeviceComm>(shared, i));
  return out;
}

}  // namespace lagserve::backend::cuda
