// The GPU's per-layer ops against their CPU kernels on the same values:
// embedding, RMSNorm (with a row gather), bias + RoPE + cache write, SwiGLU,
// and the cuBLAS GEMM. Outputs are poisoned with NaN before each run.
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/swiglu.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;
using lagserve::testing::max_rel_err;
using lagserve::testing::random_vec;
using lagserve::testing::round_bf16;
using lagserve::testing::to_bf16;
using lagserve::testing::to_float;

TEST(LayerOps, Embedding) {
  LAGSERVE_REQUIRE_GPU();
  std::mt19937 rng(1);
  const int vocab = 1000, dim = 576;
  const std::vector<float> table = round_bf16(random_vec(vocab * dim, rng));
  const std::vector<int32_t> tokens = {0, 999, 5, 5, 123};
  DeviceArray<bf16> gt(to_bf16(table));
  DeviceArray<int32_t> gtok(tokens);
  DeviceArray<float> gx(tokens.size() * dim);
  gx.poison();
  embedding(gt.get(), gtok.get(), gx.get(), tokens.size(), dim, nullptr);
  const std::vector<float> x = gx.download();
  for (size_t r = 0; r < tokens.size(); ++r) {
    for (int i = 0; i < dim; ++i) ASSERT_EQ(x[r * dim + i], table[tokens[r] * dim + i]);
  }
}

TEST(LayerOps, RmsNormWithRowGather) {
  LAGSERVE_REQUIRE_GPU();
  // Widths for each path of the kernel: float4s in registers, one to eight a
  // thread (576, 1536, 4096, 4100, 8192); two passes (10000: too wide; 1538: not a
  // multiple of 4).
  for (const int dim : {1536, 576, 4096, 4100, 8192, 10000, 1538}) {
    std::mt19937 rng(2 + dim);
    const int rows = 33;
    const std::vector<float> x = random_vec(rows * dim, rng, 3.f), w = random_vec(dim, rng);
    const std::vector<int32_t> pick = {6, 0, 3, 32};
    std::vector<float> gathered;
    for (int r : pick) gathered.insert(gathered.end(), x.begin() + r * dim, x.begin() + (r + 1) * dim);
    std::vector<float> ref(gathered.size());
    kernels::rmsnorm(gathered.data(), w.data(), ref.data(), pick.size(), dim, 1e-5f);
    DeviceArray<float> gx(x), gw(w);
    DeviceArray<int32_t> grows(pick);
    DeviceArray<bf16> gy(pick.size() * dim);
    gy.poison();
    cuda::rmsnorm(gx.get(), grows.get(), gw.get(), gy.get(), pick.size(), dim, 1e-5f, nullptr);
    EXPECT_LT(max_rel_err(to_float(gy.download()), ref), 1e-2) << "dim " << dim;
    // Without a gather: every row.
    std::vector<float> ref_all(x.size());
    kernels::rmsnorm(x.data(), w.data(), ref_all.data(), rows, dim, 1e-5f);
    DeviceArray<bf16> gy2(x.size());
    gy2.poison();
    cuda::rmsnorm(gx.get(), nullptr, gw.get(), gy2.get(), rows, dim, 1e-5f, nullptr);
    EXPECT_LT(max_rel_err(to_float(gy2.download()), ref_all), 1e-2) << "dim " << dim;
  }
}

TEST(LayerOps, BiasRopeAndCacheWrite) {
  LAGSERVE_REQUIRE_GPU();
  for (const int d : {32, 64, 128}) {
    std::mt19937 rng(3 + d);
    const int n_heads = 12, n_kv = 2, rows = 9, bs = 16, n_pool = 6;
    const int width = (n_heads + 2 * n_kv) * d, q_dim = n_heads * d, kv_dim = n_kv * d;
    std::vector<float> qkv = random_vec(rows * width, rng), bias = random_vec(width, rng);
    std::vector<float> inv_freq(d / 2);
    for (int i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(1e6f, -2.0f * i / d);
    // Positions up to 32K: large angles.
    const std::vector<int32_t> pos = {0, 1, 2, 100, 4095, 4096, 20000, 32767, 7};
    // Rows go to scattered cache indices of a table.
    const std::vector<int32_t> table = {4, 2, 5};
    const std::vector<int32_t> index = {0, 1, 15, 16, 17, 31, 32, 40, 47};
    std::vector<int32_t> slots;
    for (int32_t i : index) slots.push_back(table[i / bs] * bs + i % bs);

    std::vector<float> ref = qkv;
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < width; ++j) ref[r * width + j] += bias[j];
    kernels::rope_neox(ref.data(), rows, width, n_heads, d, pos.data(), inv_freq.data());
    kernels::rope_neox(ref.data() + q_dim, rows, width, n_kv, d, pos.data(), inv_freq.data());

    DeviceArray<float> gqkv(qkv), gbias(bias), gfreq(inv_freq);
    DeviceArray<int32_t> gpos(pos), gslots(slots);
    const size_t pool = static_cast<size_t>(n_pool) * n_kv * bs * d;
    DeviceArray<bf16> gk(pool), gv(pool);
    gk.poison();
    gv.poison();
    PagedKvBf16 kv{gk.get(), gv.get(), n_kv, bs, d};
    qkv_rope_write(gqkv.get(), gbias.get(), gpos.get(), gfreq.get(), gslots.get(), kv, rows, n_heads,
                   nullptr);
    EXPECT_LT(max_rel_err(gqkv.download(), ref), 1e-5) << "d " << d;
    // The cache holds k and v of each row at its index, in bf16.
    const std::vector<float> kc = to_float(gk.download()), vc = to_float(gv.download());
    kernels::PagedKv cpu{nullptr, nullptr, n_kv, bs, d};
    for (int r = 0; r < rows; ++r) {
      for (int h = 0; h < n_kv; ++h) {
        const int64_t off = cpu.slot_offset(table[index[r] / bs], h, index[r] % bs);
        for (int i = 0; i < d; ++i) {
          const float kref = ref[r * width + q_dim + h * d + i];
          const float vref = ref[r * width + q_dim + kv_dim + h * d + i];
          ASSERT_NEAR(kc[off + i], kref, 1e-2 * std::max(1.f, std::abs(kref))) << r << " " << h << " " << i;
          ASSERT_NEAR(vc[off + i], vref, 1e-2 * std::max(1.f, std::abs(vref))) << r << " " << h << " " << i;
        }
      }
    }
    // Slots no row wrote stay poisoned.
    int untouched_nan = 0;
    for (float x : kc) untouched_nan += std::isnan(x);
    EXPECT_EQ(untouched_nan, static_cast<int>(pool) - rows * n_kv * d);
  }
}

TEST(LayerOps, SwiGlu) {
  LAGSERVE_REQUIRE_GPU();
  // Four outputs a thread (8960), one (8962: not a multiple of 4).
  for (const int ff : {8960, 8962}) {
    std::mt19937 rng(4 + ff);
    const int rows = 5;
    const std::vector<float> gu = random_vec(rows * 2 * ff, rng, 4.f);
    std::vector<float> ref(rows * ff);
    kernels::swiglu(gu.data(), ref.data(), rows, ff);
    DeviceArray<float> ggu(gu);
    DeviceArray<bf16> gout(rows * ff);
    gout.poison();
    cuda::swiglu(ggu.get(), gout.get(), rows, ff, nullptr);
    EXPECT_LT(max_rel_err(to_float(gout.download()), ref), 1e-2) << "ff " << ff;
  }
}

TEST(LayerOps, GemmMatchesCpuOnRoundedInputs) {
  LAGSERVE_REQUIRE_GPU();
  cublasHandle_t handle;
  LAGSERVE_CUBLAS_CHECK(cublasCreate(&handle));
  for (const auto& [M, N, K] : {std::tuple{1, 1536, 1536}, std::tuple{37, 256, 576},
                                std::tuple{300, 4000, 128}}) {
    std::mt19937 rng(M + N + K);
    const std::vector<float> x = round_bf16(random_vec(M * K, rng)),
                             w = round_bf16(random_vec(N * K, rng)),
                             y0 = random_vec(M * N, rng);
    std::vector<float> ref(M * N);
    kernels::matmul_nt(x.data(), w.data(), ref.data(), M, N, K);
    DeviceArray<bf16> gx(to_bf16(x)), gw(to_bf16(w));
    DeviceArray<float> gy(M * N);
    gy.poison();
    gemm_bf16_nt(handle, gx.get(), gw.get(), gy.get(), M, N, K, false);
    // fp32 accumulation of exact bf16 products: fp32 tolerance.
    EXPECT_LT(max_rel_err(gy.download(), ref), 1e-5) << M << "x" << N << "x" << K;
    // Accumulate adds to what is there.
    gy.upload(y0);
    gemm_bf16_nt(handle, gx.get(), gw.get(), gy.get(), M, N, K, true);
    std::vector<float> ref_acc(M * N);
    for (int i = 0; i < M * N; ++i) ref_acc[i] = y0[i] + ref[i];
    EXPECT_LT(max_rel_err(gy.download(), ref_acc), 1e-5) << M << "x" << N << "x" << K;
  }
  cublasDestroy(handle);
}

}  // namespace
}  // namespace lagserve::kernels::cuda
