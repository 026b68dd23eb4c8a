// RAII owners of CUDA resources: device and pinned host arrays that grow on
// demand, a stream, an event and a cuBLAS handle. Every call is checked.
#pragma once

#include <cstddef>
#include <cstring>
#include <utility>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"

namespace lagserve::backend::cuda {

// A device array of T. reserve(n) keeps the contents only when it needn't grow.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { reserve(n); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceArray() { release(); }

  // True when it had to grow (the address changed).
  bool reserve(size_t n) {
    if (n <= n_) return false;
    release();
    LAGSERVE_CUDA_CHECK(cudaMalloc(&p_, n * sizeof(T)));
    n_ = n;
    return true;
  }
  // Uploads host data synchronously (weights at load time).
  void assign(const T* host, size_t n) {
    reserve(n);
    LAGSERVE_CUDA_CHECK(cudaMemcpy(p_, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  void release() {
    if (p_ != nullptr) LAGSERVE_CUDA_CHECK(cudaFree(p_));
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Page-locked host memory, for asynchronous copies.
template <typename T>
class PinnedArray {
 public:
  PinnedArray() = default;
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  ~PinnedArray() {
    if (p_ != nullptr) cudaFreeHost(p_);
  }
  // True when it had to grow (the address changed).
  bool reserve(size_t n) {
    if (n <= n_) return false;
    if (p_ != nullptr) LAGSERVE_CUDA_CHECK(cudaFreeHost(p_));
    LAGSERVE_CUDA_CHECK(cudaMallocHost(&p_, n * sizeof(T)));
    n_ = n;
    return true;
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

class Stream {
 public:
  Stream() { LAGSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(s_); }
  cudaStream_t get() const { return s_; }
  void synchronize() const { LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

// An instantiated CUDA graph (one captured step).
class GraphExec {
 public:
  explicit GraphExec(cudaGraph_t graph) {
    LAGSERVE_CUDA_CHECK(cudaGraphInstantiate(&g_, graph, 0));
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() { cudaGraphExecDestroy(g_); }
  void launch(cudaStream_t stream) const { LAGSERVE_CUDA_CHECK(cudaGraphLaunch(g_, stream)); }

 private:
  cudaGraphExec_t g_ = nullptr;
};

class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream) {
    LAGSERVE_CUBLAS_CHECK(cublasCreate(&h_));
    LAGSERVE_CUBLAS_CHECK(cublasSetStream(h_, stream));
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle() { cublasDestroy(h_); }
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

}  // namespace lagserve::backend::cuda
