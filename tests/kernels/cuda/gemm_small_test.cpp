// The small-row GEMM (kernels/cuda/gemm_small.h) against a double-precision
// product of the same bf16 values: stored and accumulated outputs, 1 to 32
// rows, shapes from one block to the Qwen2.5-1.5B projections; rows past M
// left as they were. Then what the backend relies on: a row gives the same
// bits alone as in a batch, and launches that overlap (programmatic dependent
// launch, the weights staged before the wait) give the bits of launches that
// do not.
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda/gemm_small.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;
using lagserve::testing::max_rel_err;
using lagserve::testing::random_vec;
using lagserve::testing::round_bf16;
using lagserve::testing::to_bf16;

// y0[r, n] + sum_k x[r, k] * w[n, k] in double.
std::vector<float> product_ref(const std::vector<float>& x, const std::vector<float>& w,
                               const std::vector<float>& y0, int M, int N, int K) {
  std::vector<float> y(size_t(M) * N);
  for (int r = 0; r < M; ++r) {
    for (int n = 0; n < N; ++n) {
      double s = y0.empty() ? 0.0 : y0[size_t(r) * N + n];
      for (int k = 0; k < K; ++k) s += double(x[size_t(r) * K + k]) * w[size_t(n) * K + k];
      y[size_t(r) * N + n] = static_cast<float>(s);
    }
  }
  return y;
}

struct Shape {
  int M, N, K;
};

TEST(GemmSmall, StoreAndAccumulateMatchADoubleProduct) {
  LAGSERVE_REQUIRE_GPU();
  const Shape shapes[] = {{1, 16, 16}, {5, 48, 64}, {8, 2048, 1536}, {17, 1536, 1536},
                          {32, 2048, 1536}, {31, 64, 2048}, {32, 32, 160}};
  std::mt19937 rng(5);
  for (const Shape& s : shapes) {
    if (!gemm_small_supports(s.N, s.K)) {
      ADD_FAILURE() << "N=" << s.N << " K=" << s.K << " not supported on this GPU";
      continue;
    }
    const std::vector<float> x = round_bf16(random_vec(size_t(s.M) * s.K, rng));
    const std::vector<float> w = round_bf16(random_vec(size_t(s.N) * s.K, rng, 0.05f));
    const std::vector<float> y0 = random_vec(size_t(s.M) * s.N, rng);
    DeviceArray<bf16> gx(to_bf16(x)), gw(to_bf16(w));
    for (const bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "M=" << s.M << " N=" << s.N << " K=" << s.K
                                        << (accumulate ? " accumulate" : " store"));
      // Two rows more than M: they must keep their poison.
      DeviceArray<float> gy(size_t(s.M + 2) * s.N);
      gy.poison();
      if (accumulate) LAGSERVE_CUDA_CHECK(cudaMemcpy(gy.get(), y0.data(), y0.size() * sizeof(float),
                                                     cudaMemcpyHostToDevice));
      gemm_small_bf16(gx.get(), gw.get(), gy.get(), s.M, s.N, s.K, accumulate, nullptr);
      const std::vector<float> all = gy.download();
      const std::vector<float> got(all.begin(), all.begin() + size_t(s.M) * s.N);
      const std::vector<float> want = product_ref(x, w, accumulate ? y0 : std::vector<float>{}, s.M, s.N, s.K);
      EXPECT_LT(max_rel_err(got, want), 1e-5);
      for (size_t i = got.size(); i < all.size(); ++i) {
        ASSERT_TRUE(std::isnan(all[i])) << "wrote past row M at " << i;
      }
    }
  }
}

TEST(GemmSmall, RowGivesTheSameBitsAloneAsInABatch) {
  LAGSERVE_REQUIRE_GPU();
  const int M = 32, N = 2048, K = 1536;
  std::mt19937 rng(7);
  const std::vector<float> x = random_vec(size_t(M) * K, rng), w = random_vec(size_t(N) * K, rng, 0.05f);
  DeviceArray<bf16> gx(to_bf16(x)), gw(to_bf16(w));
  DeviceArray<float> batch(size_t(M) * N), alone(size_t(M) * N);
  batch.poison();
  alone.poison();
  gemm_small_bf16(gx.get(), gw.get(), batch.get(), M, N, K, false, nullptr);
  for (int r = 0; r < M; ++r) {
    gemm_small_bf16(gx.get() + size_t(r) * K, gw.get(), alone.get() + size_t(r) * N, 1, N, K, false, nullptr);
  }
  const std::vector<float> a = batch.download(), b = alone.download();
  for (float v : a) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

// Every link adds its product into the same rows: a link that read them
// before the one before had written would lose that link's sum. The chain
// launched without a host sync between links gives the bits of the chain
// launched one link at a time.
TEST(GemmSmall, OverlappedLaunchesGiveTheBitsOfSynchronisedOnes) {
  LAGSERVE_REQUIRE_GPU();
  const int M = 32, N = 1536, K = 1536, links = 16;
  std::mt19937 rng(11);
  const std::vector<float> x = random_vec(size_t(M) * K, rng), w = random_vec(size_t(N) * K, rng, 0.05f);
  DeviceArray<bf16> gx(to_bf16(x)), gw(to_bf16(w));
  DeviceArray<float> gy(size_t(M) * N);
  cudaStream_t st = nullptr;
  LAGSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  auto run = [&](bool sync_each) {
    gy.poison();
    LAGSERVE_CUDA_CHECK(cudaDeviceSynchronize());  // st does not wait for the legacy stream
    for (int i = 0; i < links; ++i) {
      gemm_small_bf16(gx.get(), gw.get(), gy.get(), M, N, K, i > 0, st);
      if (sync_each) LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
    }
    LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
    return gy.download();
  };
  const std::vector<float> one_by_one = run(true);
  for (float v : one_by_one) ASSERT_TRUE(std::isfinite(v));
  for (int rep = 0; rep < 3; ++rep) {
    const std::vector<float> chained = run(false);
    EXPECT_EQ(std::memcmp(chained.data(), one_by_one.data(), chained.size() * sizeof(float)), 0)
        << "repetition " << rep;
  }
  LAGSERVE_CUDA_CHECK(cudaStreamDestroy(st));
}

TEST(GemmSmall, RefusesShapesItCannotRun) {
  LAGSERVE_REQUIRE_GPU();
  EXPECT_FALSE(gemm_small_supports(24, 64));      // N not a multiple of 16
  EXPECT_FALSE(gemm_small_supports(32, 24));      // K not a multiple of 16
  EXPECT_FALSE(gemm_small_supports(32, 65536));   // K past shared memory
  DeviceArray<bf16> x(33 * 64), w(32 * 64);
  DeviceArray<float> y(33 * 32);
  EXPECT_THROW(gemm_small_bf16(x.get(), w.get(), y.get(), 33, 32, 64, false, nullptr), std::invalid_argument);
  EXPECT_THROW(gemm_small_bf16(x.get(), w.get(), y.get(), 4, 24, 64, false, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace lagserve::kernels::cuda
