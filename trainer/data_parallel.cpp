#include "trainer/data_parallel.h"

#include <chrono>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

// LAGSERVE_HAVE_GLOO: set by trainer/CMakeLists.txt when Gloo's headers and
// library are found.
#ifdef LAGSERVE_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace lagserve::trainer {

struct DataParallel::Group {
#ifdef LAGSERVE_HAVE_GLOO
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
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

absl::StatusOr<std::unique_ptr<DataParallel>> DataParallel::from_env() {
  const absl::StatusOr<int> world = env_int("WORLD_SIZE", 1), rank = env_int("RANK", 0);
  if (!world.ok()) return world.status();
  if (!rank.ok()) return rank.status();
  if (*world < 1 || *rank >= *world) {
    return absl::InvalidArgumentError(fmt::format("RANK={} with WORLD_SIZE={}: the rank must be below the size",
                                                  *rank, *world));
  }
  if (*world == 1) return std::unique_ptr<DataParallel>(new DataParallel(0, 1, nullptr));
#ifndef LAGSERVE_HAVE_GLOO
  return absl::InvalidArgumentError(fmt::format(
      "WORLD_SIZE={}: this lagtrain was built without Gloo's headers (Debian: libgloo-dev)", *world));
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
    auto options = c10d::ProcessGroupGloo::Options::create(kTimeout);
    // GLOO_SOCKET_IFNAME names the interface to use (as in PyTorch); else the host name's.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    options->devices.push_back(ifname != nullptr && *ifname != '\0'
                                   ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                   : c10d::ProcessGroupGloo::createDefaultDevice());
    group->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, *rank, *world, options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(fmt::format("rank {} of {} could not join {}:{}: {}", *rank, *world,
                                              addr, *port, e.what()));
  }
  return std::unique_ptr<DataParallel>(new DataParallel(*rank, *world, std::move(group)));
#endif
}

absl::Status DataParallel::all_reduce_sum(torch::Tensor& t) {
#ifdef LAGSERVE_HAVE_GLOO
  if (group_ == nullptr) return absl::OkStatus();
  try {
    std::vector<torch::Tensor> ts{t};
    group_->pg->allreduce(ts)->wait();
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
