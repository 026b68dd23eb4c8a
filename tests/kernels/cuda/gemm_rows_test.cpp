// gemm_rows_bf16 (kernels/cuda/gemm_rows.h) against a double-precision
// product of the same bf16 values: stored and added outputs, strided rows and
// outputs (the gaps must stay untouched), more than 32 rows, and grids that
// take every path of the kernel (a block of one tile that all 8 warps share,
// blocks of many tiles where runs start and end inside tiles, more SMs than
// tiles). Then what the runtime needs: a row gives the same bits alone as in
// any batch, and launches that overlap (programmatic dependent launch) give
// the bits of launches that do not.
#include "kernels/cuda/gemm_rows.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;
using lagserve::testing::random_vec;
using lagserve::testing::round_bf16;
using lagserve::testing::to_bf16;

struct Shape {
  int N, K, sm_count;
};

class GemmRows : public ::testing::TestWithParam<Shape> {};

TEST_P(GemmRows, MatchesDoubleProduct) {
  LAGSERVE_REQUIRE_GPU();
  const Shape s = GetParam();
  std::mt19937 rng(s.N * 7 + s.K + s.sm_count);
  for (const int M : {1, 7, 32, 45}) {
    for (const bool add : {false, true}) {
      const int lda = s.K + 8, ldy = s.N + 3;  // strided: the gaps must stay as they were
      const std::vector<float> a = round_bf16(random_vec(static_cast<size_t>(M) * lda, rng));
      const std::vector<float> w = round_bf16(random_vec(static_cast<size_t>(s.N) * s.K, rng, 0.05f));
      // Two rows past M: a write there would be out of bounds for the caller.
      std::vector<float> y0(static_cast<size_t>(M + 2) * ldy, NAN);
      if (add) {
        for (int r = 0; r < M; ++r) {
          for (int n = 0; n < s.N; ++n) y0[static_cast<size_t>(r) * ldy + n] = static_cast<float>(rng() % 1000) / 250.f - 2.f;
        }
      }
      DeviceArray<__nv_bfloat16> ga(to_bf16(a)), gw(to_bf16(w));
      DeviceArray<float> gy(y0);
      gemm_rows_bf16(ga.get(), lda, gw.get(), gy.get(), ldy, M, s.N, s.K, add, s.sm_count, nullptr);
      const std::vector<float> got = gy.download();
      double worst = 0;
      for (int r = 0; r < M + 2; ++r) {
        for (int n = 0; n < ldy; ++n) {
          const size_t i = static_cast<size_t>(r) * ldy + n;
          if (n >= s.N || r >= M) {
            ASSERT_TRUE(std::isnan(got[i])) << "row " << r << " column " << n << " (outside the output) written";
            continue;
          }
          double ref = add ? y0[i] : 0.0, mag = std::fabs(ref);
          for (int k = 0; k < s.K; ++k) {
            const double p = double(a[static_cast<size_t>(r) * lda + k]) * w[static_cast<size_t>(n) * s.K + k];
            ref += p;
            mag += std::fabs(p);
          }
          ASSERT_TRUE(std::isfinite(got[i])) << "row " << r << " feature " << n;
          worst = std::max(worst, std::fabs(got[i] - ref) / (mag + 1e-6));
        }
      }
      // fp32 sums of K products: error well under 1e-5 of the sum of |terms|.
      EXPECT_LT(worst, 1e-5) << "M " << M << (add ? " add" : " store");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmRows,
    ::testing::Values(Shape{2048, 1536, 132},   // Qwen2.5-1.5B qkv: one tile a block, 8 warps share it
                      Shape{1536, 1536, 132},   // o
                      Shape{8960, 1536, 132},   // half of gate_up: 4 or 5 tiles a block
                      Shape{1536, 2048, 7},     // many tiles a block, runs across tiles
                      Shape{96, 64, 1000},      // more SMs than tiles; one unit of K
                      Shape{176, 320, 3},       // a small shape on 3 SMs
                      Shape{16, 192, 1},        // 3 units for 8 warps: empty runs inside a shared tile
                      Shape{48, 128, 1},        // 6 units, 2 a tile: runs that start and end inside tiles
                      Shape{4096, 2048, 132}));  // the largest K

// A row's outputs do not depend on the rows beside it or on M; launches on a
// stream of their own that overlap give the bits of launches alone.
TEST(GemmRowsProperties, RowsAloneAndOverlappedLaunchesGiveTheSameBits) {
  LAGSERVE_REQUIRE_GPU();
  const int N = 1536, K = 1536, M = 32, sms = 132;
  std::mt19937 rng(11);
  const std::vector<float> a = random_vec(static_cast<size_t>(M) * K, rng);
  const std::vector<float> w = random_vec(static_cast<size_t>(N) * K, rng, 0.05f);
  DeviceArray<__nv_bfloat16> ga(to_bf16(a)), gw(to_bf16(w));
  DeviceArray<float> batch(static_cast<size_t>(M) * N);
  batch.poison();
  gemm_rows_bf16(ga.get(), K, gw.get(), batch.get(), N, M, N, K, false, sms, nullptr);
  const std::vector<float> all = batch.download();
  for (const int r : {0, 13, 31}) {
    DeviceArray<float> one(N);
    one.poison();
    gemm_rows_bf16(ga.get() + static_cast<size_t>(r) * K, K, gw.get(), one.get(), N, 1, N, K, false, sms, nullptr);
    const std::vector<float> alone = one.download();
    EXPECT_EQ(std::memcmp(alone.data(), all.data() + static_cast<size_t>(r) * N, N * sizeof(float)), 0) << "row " << r;
  }
  // y = a w^T, then y += a w^T, four times back to back on one stream: each
  // launch may start before the one before it has finished.
  cudaStream_t st = nullptr;
  LAGSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  DeviceArray<float> acc(static_cast<size_t>(M) * N);
  LAGSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  gemm_rows_bf16(ga.get(), K, gw.get(), acc.get(), N, M, N, K, false, sms, st);
  for (int i = 0; i < 3; ++i) gemm_rows_bf16(ga.get(), K, gw.get(), acc.get(), N, M, N, K, true, sms, st);
  LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
  LAGSERVE_CUDA_CHECK(cudaStreamDestroy(st));
  const std::vector<float> four = acc.download();
  for (size_t i = 0; i < four.size(); ++i) {
    const float want = ((all[i] + all[i]) + all[i]) + all[i];
    ASSERT_EQ(four[i], want) << "element " << i;
  }
}

}  // namespace
}  // namespace lagserve::kernels::cuda
