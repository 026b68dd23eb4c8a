#include "trainer/data_parallel.h"

#include <chrono>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

// Set by trainer/CMakeLists.txt: LAGSERVE_HAVE_GLOO when Gloo's headers and
// library are found, LAGSERVE_HAVE_C10D_NCCL when LibTorch has the NCCL
// process group (PyTorch's CUDA builds).
#ifdef LAGSERVE_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef LAGSERVE_HAVE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#if defined(LAGSERVE_HAVE_GLOO) || defined(LAGSERVE_HAVE_C10D_NCCL)
#define LAGSERVE_HAVE_C10D 1
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace lagserve::trainer {

struct DataParallel::Group {
#ifdef LAGSERVE_HAVE_C10D
  c10::intrusive_ptr<c10d::Store> store;
#endif
#ifdef LAGSERVE_HAVE_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#ifdef LAGSERVE_HAVE_C10D_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
  torch::Device device{torch::kCPU};  // where NCCL's operands go
#endif
};

namespace {

// How long a collective waits for its peers: rank 0 evaluates and writes
// checkpoints while the others wait in the next step's all-reduce.
constexpr std::chrono::minutes kTimeout{30};

// An integer environment variable; `fallback` when unset.
absl::StatusOr<int> env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 0 || n > 1 << 20) {
    return absl::InvalidArgumentError(fmt::format("{}={}: not a non-negative integer", name, v));
  }
  return static_cast<int>(n);
}

}  // namespace

DataParallel::DataParallel(int rank, int world, std::unique_ptr<Group> group)
    : rank_(rank), world_(world), group_(std::move(group)) {}

DataParallel::~DataParallel() = default;

absl::StatusOr<std::unique_ptr<DataParallel>> DataParallel::from_env(const torch::Device& device) {
  const absl::StatusOr<int> world = env_int("WORLD_SIZE", 1), rank = env_int("RANK", 0);
  if (!world.ok()) return world.status();
  if (!rank.ok()) return rank.status();
  if (*world < 1 || *rank >= *world) {
    return absl::InvalidArgumentError(fmt::format("RANK={} with WORLD_SIZE={}: the rank must be below the size",
                                                  *rank, *world));
  }
  if (*world == 1) return std::unique_ptr<DataParallel>(new DataParallel(0, 1, nullptr));
  (void)device;  // unused in a build without NCCL
#ifdef LAGSERVE_HAVE_C10D_NCCL
  const bool nccl = device.is_cuda();
#else
  const bool nccl = false;
#endif
#ifndef LAGSERVE_HAVE_GLOO
  if (!nccl) {
    return absl::InvalidArgumentError(fmt::format(
        "WORLD_SIZE={}: this lagtrain was built without Gloo's headers (Debian: libgloo-dev){}", *world,
        device.is_cuda() ? " and its LibTorch has no NCCL process group" : ""));
  }
#endif
#ifndef LAGSERVE_HAVE_C10D
  (void)nccl;
  return absl::InternalError("unreachable: no process group");
#else
  const char* addr = std::getenv("MASTER_ADDR");
  const absl::StatusOr<int> port = env_int("MASTER_PORT", -1);
  if (!port.ok()) return port.status();
  if (addr == nullptr || *addr == '\0' || *port <= 0 || *port > 65535) {
    return absl::InvalidArgumentError(fmt::format(
        "WORLD_SIZE={} needs MASTER_ADDR and MASTER_PORT (the address and port of rank 0)", *world));
  }
  auto group = std::make_unique<Group>();
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(*port);
    so.isServer = *rank == 0;
    so.numWorkers = static_cast<size_t>(*world);
    so.timeout = kTimeout;
    group->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
#ifdef LAGSERVE_HAVE_C10D_NCCL
    if (nccl) {
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = kTimeout;
      group->device = device;
      group->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(group->store, *rank, *world, options);
    }
#endif
#ifdef LAGSERVE_HAVE_GLOO
    if (!nccl) {
      auto options = c10d::ProcessGroupGloo::Options::create(kTimeout);
      // GLOO_SOCKET_IFNAME names the interface to use (as in PyTorch); else the host name's.
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      options->devices.push_back(ifname != nullptr && *ifname != '\0'
                                     ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                     : c10d::ProcessGroupGloo::createDefaultDevice());
      group->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, *rank, *world, options);
    }
#endif
  } catch (const std::exception& e) {
    return absl::UnavailableError(fmt::format("rank {} of {} could not join {}:{}: {}", *rank, *world,
                                              addr, *port, e.what()));
  }
  return std::unique_ptr<DataParallel>(new DataParallel(*rank, *world, std::move(group)));
#endif
}

bool DataParallel::uses_nccl() const {
#ifdef LAGSERVE_HAVE_C10D_NCCL
  return group_ != nullptr && group_->nccl;
#else
  return false;
#endif
}

absl::Status DataParallel::all_reduce_sum(torch::Tensor& t) {
  if (group_ == nullptr) return absl::OkStatus();
#ifdef LAGSERVE_HAVE_C10D
  try {
#ifdef LAGSERVE_HAVE_C10D_NCCL
    if (group_->nccl) {
      // NCCL sums device memory: a host operand goes there and back.
      std::vector<torch::Tensor> ts{t.is_cuda() ? t : t.to(group_->device)};
      group_->nccl->allreduce(ts)->wait();
      if (!t.is_cuda()) t.copy_(ts[0].cpu());
      return absl::OkStatus();
    }
#endif
#ifdef LAGSERVE_HAVE_GLOO
    std::vector<torch::Tensor> ts{t};
    group_->gloo->allreduce(ts)->wait();
#endif
  } catch (const std::exception& e) {
    return absl::UnavailableError(fmt::format("rank {} of {}: all-reduce failed (a replica gone?): {}",
                                              rank_, world_, e.what()));
  }
#else
  (void)t;
#endif
  return absl::OkStatus();
}

absl::Status DataParallel::all_reduce_grads(const std::vector<torch::Tensor>& params) {
  if (group_ == nullptr) return absl::OkStatus();
  std::vector<torch::Tensor> grads, flat_parts;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    grads.push_back(p.grad());
    flat_parts.push_back(p.grad().reshape(-1));
  }
  torch::Tensor flat = torch::cat(flat_parts);
  if (absl::Status st = all_reduce_sum(flat); !st.ok()) return st;
  int64_t at = 0;
  for (auto& g : grads) {
    g.copy_(flat.narrow(0, at, g.numel()).view_as(g));
    at += g.numel();
  }
  return absl::OkStatus();
}

}  // namespace lagserve::trainer
