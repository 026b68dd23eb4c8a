// The skinny GEMMs (kernels/cuda/gemv.h), both kernels (tensor-core
// gemv_bf16 and streaming gemv_stream_bf16), against the CPU kernels on the
// same bf16 weights: each epilogue, each input kind, shapes that take every
// path of the kernels (blocks splitting K, slices with a 16-wide tail, K in
// slices of 1, 2 and 4 warps, spans cut short, more than 32 rows). Then the properties the runtime needs: a row gives the same bits
// alone as in any batch, and launches that overlap (programmatic dependent
// launch) give the bits of launches that do not.
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cuda/gemv.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;
using lagserve::testing::max_rel_err;
using lagserve::testing::random_vec;
using lagserve::testing::round_bf16;
using lagserve::testing::to_bf16;
using lagserve::testing::to_float;

int sm_count() {
  int sms = 0;
  LAGSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  return sms;
}

// y[r, n] = sum_k x[r, k] * w[n, k] in double.
std::vector<float> matmul_ref(const std::vector<float>& x, const std::vector<float>& w, int M, int N, int K) {
  std::vector<float> y(static_cast<size_t>(M) * N);
  for (int r = 0; r < M; ++r) {
    for (int n = 0; n < N; ++n) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += double(x[size_t(r) * K + k]) * w[size_t(n) * K + k];
      y[size_t(r) * N + n] = static_cast<float>(s);
    }
  }
  return y;
}

// Scratch sized for the shape, counters zero.
struct Scratch {
  Scratch(int64_t N, int64_t K)
      : ws(std::max<int64_t>(1, gemv_workspace_floats(N, K, sm_count()))), counters(gemv_counters(N)) {
    LAGSERVE_CUDA_CHECK(cudaMemset(counters.get(), 0, counters.size() * sizeof(int32_t)));
  }
  GemvScratch get() const {
    return {ws.get(), static_cast<int64_t>(ws.size()), counters.get(), static_cast<int64_t>(counters.size())};
  }
  DeviceArray<float> ws;
  DeviceArray<int32_t> counters;
};

// Both kernels through one signature (the streaming one needs no scratch).
class GemvKernels : public ::testing::TestWithParam<const char*> {
 protected:
  bool stream() const { return std::string(GetParam()) == "stream"; }
  void gemv(const bf16* w, int64_t N, int64_t K, const GemvInput& in, const GemvOutput& out, int64_t M,
            const GemvScratch& scratch, cudaStream_t st) const {
    if (stream()) {
      gemv_stream_bf16(w, N, K, in, out, M, sm_count(), st);
    } else {
      gemv_bf16(w, N, K, in, out, M, scratch, sm_count(), st);
    }
  }
};

INSTANTIATE_TEST_SUITE_P(Both, GemvKernels, ::testing::Values("mma", "stream"),
                         [](const auto& info) { return std::string(info.param); });

// fp32 rows RMS-normalised on the fly with weights nw (eps 1e-5, as the CPU references).
GemvInput normed(const float* x, const float* nw) {
  GemvInput in;
  in.x_norm = x;
  in.norm_weight = nw;
  in.eps = 1e-5f;
  return in;
}

// Plain rows in, stored (through a row gather and scatter) or added.
TEST_P(GemvKernels, StoreAndAddMatchTheCpu) {
  LAGSERVE_REQUIRE_GPU();
  struct Shape { int N, K; };
  for (const Shape s : {Shape{1536, 8960}, Shape{2048, 1536}, Shape{4096, 576}, Shape{65536, 128}}) {
    for (const int M : {1, 7, 19, 40}) {
      std::mt19937 rng(s.N + s.K + M);
      const std::vector<float> w = round_bf16(random_vec(size_t(s.N) * s.K, rng)),
                               x = round_bf16(random_vec(size_t(M) * s.K, rng)),
                               y0 = random_vec(size_t(M) * s.N, rng);
      const std::vector<float> ref = matmul_ref(x, w, M, s.N, s.K);
      DeviceArray<bf16> gw(to_bf16(w)), gx(to_bf16(x));
      Scratch scratch(s.N, s.K);
      GemvInput in;
      in.x = gx.get();
      // Add: y += x w^T.
      DeviceArray<float> gy(y0);
      GemvOutput out;
      out.epilogue = GemvEpilogue::kAdd;
      out.y = gy.get();
      out.y_ld = s.N;
      gemv(gw.get(), s.N, s.K, in, out, M, scratch.get(), nullptr);
      std::vector<float> ref_add(ref.size());
      for (size_t i = 0; i < ref.size(); ++i) ref_add[i] = y0[i] + ref[i];
      // fp32 accumulation of exact bf16 products: fp32 tolerance.
      EXPECT_LT(max_rel_err(gy.download(), ref_add), 1e-5) << s.N << "x" << s.K << " M " << M;
      // Store, reading input rows in reverse and writing output rows 1, 3, 5, ...
      std::vector<int32_t> in_rows(M), out_rows(M);
      for (int r = 0; r < M; ++r) {
        in_rows[r] = M - 1 - r;
        out_rows[r] = 2 * r + 1;
      }
      DeviceArray<int32_t> gin(in_rows), gout(out_rows);
      DeviceArray<float> gz(size_t(2 * M) * s.N);
      gz.poison();
      in.rows = gin.get();
      out.epilogue = GemvEpilogue::kStore;
      out.y = gz.get();
      out.rows = gout.get();
      gemv(gw.get(), s.N, s.K, in, out, M, scratch.get(), nullptr);
      const std::vector<float> z = gz.download();
      std::vector<float> got, want;
      int untouched_nan = 0;
      for (int r = 0; r < 2 * M; ++r) {
        for (int n = 0; n < s.N; ++n) {
          if (r % 2 == 0) {
            untouched_nan += std::isnan(z[size_t(r) * s.N + n]);
          } else {
            got.push_back(z[size_t(r) * s.N + n]);
            want.push_back(ref[size_t(M - 1 - r / 2) * s.N + n]);
          }
        }
      }
      EXPECT_LT(max_rel_err(got, want), 1e-5) << s.N << "x" << s.K << " M " << M;
      EXPECT_EQ(untouched_nan, M * s.N) << "rows no output row maps to were written";
      // Blocks that split K leave their counters as they found them.
      for (int32_t c : scratch.counters.download()) ASSERT_EQ(c, 0);
    }
  }
}

// fp32 rows normalised on the fly, then SwiGLU of the two halves.
// Two FFN widths: 1024, whose warps take one chunk each, and 8960
// (Qwen2.5-1.5B), whose one-row kernel streams 12 chunks through a ring.
TEST_P(GemvKernels, NormAndSwigluMatchTheCpu) {
  LAGSERVE_REQUIRE_GPU();
  struct Case { int ff, M; };
  for (const Case c : {Case{1024, 1}, Case{1024, 9}, Case{1024, 33}, Case{8960, 1}, Case{8960, 3}}) {
    const int ff = c.ff, N = 2 * ff, K = 1536, M = c.M;
    std::mt19937 rng(M + ff);
    const std::vector<float> w = round_bf16(random_vec(size_t(N) * K, rng)),
                             x = random_vec(size_t(M) * K, rng, 3.f), nw = random_vec(K, rng);
    std::vector<float> h(x.size());
    kernels::rmsnorm(x.data(), nw.data(), h.data(), M, K, 1e-5f);
    const std::vector<float> gu = matmul_ref(h, w, M, N, K);
    std::vector<float> ref(size_t(M) * ff);
    kernels::swiglu(gu.data(), ref.data(), M, ff);
    DeviceArray<bf16> gw(to_bf16(w));
    DeviceArray<float> gx(x), gnw(nw);
    DeviceArray<bf16> gact(size_t(M) * ff);
    gact.poison();
    Scratch scratch(N, K);
    const GemvInput in = normed(gx.get(), gnw.get());
    GemvOutput out;
    out.epilogue = GemvEpilogue::kSwiglu;
    out.act = gact.get();
    gemv(gw.get(), N, K, in, out, M, scratch.get(), nullptr);
    // The normalised input is rounded to bf16 (as RMSNorm's output is): bf16 tolerance.
    EXPECT_LT(max_rel_err(to_float(gact.download()), ref), 1e-2) << "ff " << ff << " M " << M;
  }
}

// Normalised rows, then bias, RoPE and the K/V cache write of qkv rows.
TEST_P(GemvKernels, QkvRopeMatchesTheCpu) {
  LAGSERVE_REQUIRE_GPU();
  for (const int d : {64, 128}) {
    const int n_heads = 12, n_kv = 2, K = 1536, bs = 16, n_pool = 8, M = 37;
    const int N = (n_heads + 2 * n_kv) * d, q_dim = n_heads * d, kv_dim = n_kv * d;
    std::mt19937 rng(d);
    const std::vector<float> w = round_bf16(random_vec(size_t(N) * K, rng, 0.05f)),
                             x = random_vec(size_t(M) * K, rng), nw = random_vec(K, rng),
                             bias = random_vec(N, rng);
    std::vector<float> inv_freq(d / 2);
    for (int i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(1e6f, -2.0f * i / d);
    std::vector<int32_t> pos(M), slots(M);
    for (int r = 0; r < M; ++r) {
      pos[r] = r * 997 % 32768;
      slots[r] = (r * 5) % (n_pool * bs);  // distinct: 5 and 128 are coprime
    }
    std::vector<float> h(x.size());
    kernels::rmsnorm(x.data(), nw.data(), h.data(), M, K, 1e-5f);
    std::vector<float> ref = matmul_ref(h, w, M, N, K);
    for (int r = 0; r < M; ++r)
      for (int j = 0; j < N; ++j) ref[size_t(r) * N + j] += bias[j];
    kernels::rope_neox(ref.data(), M, N, n_heads, d, pos.data(), inv_freq.data());
    kernels::rope_neox(ref.data() + q_dim, M, N, n_kv, d, pos.data(), inv_freq.data());

    DeviceArray<bf16> gw(to_bf16(w));
    DeviceArray<float> gx(x), gnw(nw), gbias(bias), gfreq(inv_freq), gy(size_t(M) * N);
    DeviceArray<int32_t> gpos(pos), gslots(slots);
    const size_t pool = size_t(n_pool) * n_kv * bs * d;
    DeviceArray<bf16> gk(pool), gv(pool);
    gk.poison();
    gv.poison();
    gy.poison();
    Scratch scratch(N, K);
    const GemvInput in = normed(gx.get(), gnw.get());
    GemvOutput out;
    out.epilogue = GemvEpilogue::kQkvRope;
    out.y = gy.get();
    out.bias = gbias.get();
    out.positions = gpos.get();
    out.inv_freq = gfreq.get();
    out.slots = gslots.get();
    out.kv = {gk.get(), gv.get(), n_kv, bs, d};
    out.n_heads = n_heads;
    gemv(gw.get(), N, K, in, out, M, scratch.get(), nullptr);
    EXPECT_LT(max_rel_err(gy.download(), ref), 1e-2) << "d " << d;
    const std::vector<float> kc = to_float(gk.download()), vc = to_float(gv.download());
    kernels::PagedKv cpu{nullptr, nullptr, n_kv, bs, d};
    std::vector<float> kgot, kwant, vgot, vwant;
    for (int r = 0; r < M; ++r) {
      for (int hd = 0; hd < n_kv; ++hd) {
        const int64_t o = cpu.slot_offset(slots[r] / bs, hd, slots[r] % bs);
        for (int i = 0; i < d; ++i) {
          kgot.push_back(kc[o + i]);
          kwant.push_back(ref[size_t(r) * N + q_dim + hd * d + i]);
          vgot.push_back(vc[o + i]);
          vwant.push_back(ref[size_t(r) * N + q_dim + kv_dim + hd * d + i]);
        }
      }
    }
    EXPECT_LT(max_rel_err(kgot, kwant), 1e-2) << "d " << d;
    EXPECT_LT(max_rel_err(vgot, vwant), 1e-2) << "d " << d;
    int untouched_nan = 0;
    for (float v : kc) untouched_nan += std::isnan(v);
    EXPECT_EQ(untouched_nan, static_cast<int>(pool) - M * n_kv * d);
  }
}

// A row's bits do not depend on the rows beside it: row r of a 40-row batch
// equals row r computed alone, for every epilogue (the engine's
// together-vs-alone property rests on this).
TEST_P(GemvKernels, RowGivesTheSameBitsAloneAsInABatch) {
  LAGSERVE_REQUIRE_GPU();
  const int M = 40, d = 128, n_heads = 4, n_kv = 2, K = 1536, bs = 16;
  const int N = (n_heads + 2 * n_kv) * d;  // 1024: also valid for the other epilogues
  std::mt19937 rng(5);
  const std::vector<float> w = round_bf16(random_vec(size_t(N) * K, rng, 0.05f)),
                           x = random_vec(size_t(M) * K, rng), nw = random_vec(K, rng);
  std::vector<float> inv_freq(d / 2);
  for (int i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(1e4f, -2.0f * i / d);
  std::vector<int32_t> pos(M), slots(M), ident(M);
  for (int r = 0; r < M; ++r) {
    pos[r] = 100 + 37 * r;
    slots[r] = r;
    ident[r] = r;
  }
  DeviceArray<bf16> gw(to_bf16(w)), gxb(to_bf16(x));
  DeviceArray<float> gx(x), gnw(nw), gfreq(inv_freq);
  DeviceArray<int32_t> gpos(pos), gslots(slots), gident(ident);
  Scratch scratch(N, K);
  const size_t pool = size_t(M) * n_kv * bs * d;  // generous: slots < M
  for (const GemvEpilogue e : {GemvEpilogue::kStore, GemvEpilogue::kAdd, GemvEpilogue::kSwiglu,
                               GemvEpilogue::kQkvRope}) {
    for (const bool norm : {false, true}) {
      // Output as bytes per row: y (fp32, N) or act (bf16, N/2).
      auto run = [&](int first, int rows) {
        DeviceArray<float> gy(size_t(M) * N);
        DeviceArray<bf16> gact(size_t(M) * N / 2), gk(pool), gv(pool);
        LAGSERVE_CUDA_CHECK(cudaMemset(gy.get(), 0, gy.size() * sizeof(float)));
        LAGSERVE_CUDA_CHECK(cudaMemset(gact.get(), 0, gact.size() * sizeof(bf16)));
        GemvInput in;
        if (norm) {
          in.x_norm = gx.get();
          in.norm_weight = gnw.get();
          in.eps = 1e-6f;
        } else {
          in.x = gxb.get();
        }
        in.rows = gident.get() + first;
        GemvOutput out;
        out.epilogue = e;
        out.y = gy.get() + size_t(first) * N;
        out.y_ld = N;
        out.act = gact.get() + size_t(first) * N / 2;
        out.positions = gpos.get() + first;
        out.slots = gslots.get() + first;
        out.inv_freq = gfreq.get();
        out.kv = {gk.get(), gv.get(), n_kv, bs, d};
        out.n_heads = n_heads;
        gemv(gw.get(), N, K, in, out, rows, scratch.get(), nullptr);
        return e == GemvEpilogue::kSwiglu ? std::vector<float>(to_float(gact.download()))
                                          : gy.download();
      };
      const std::vector<float> batch = run(0, M);
      const size_t width = e == GemvEpilogue::kSwiglu ? N / 2 : N;
      for (const int r : {0, 7, 8, 31, 32, 39}) {
        const std::vector<float> alone = run(r, 1);
        EXPECT_EQ(std::memcmp(batch.data() + r * width, alone.data() + r * width, width * sizeof(float)), 0)
            << "epilogue " << static_cast<int>(e) << " norm " << norm << " row " << r;
      }
    }
  }
}

// Back-to-back launches on a stream overlap (programmatic dependent launch,
// kernels/cuda/pdl.h): each link of this chain normalises the previous link's
// output, so a kernel that read it (or reset the shared split-K counters)
// before its pdl_wait would see poison or a stale value. The chain launched
// without a host sync between links gives the bits of the chain launched one
// link at a time.
TEST_P(GemvKernels, OverlappedLaunchesGiveTheBitsOfSynchronisedOnes) {
  LAGSERVE_REQUIRE_GPU();
  const int N = 1536, K = 1536, links = 16;  // N = K: blocks split K, counters shared
  std::mt19937 rng(11);
  const std::vector<float> w = round_bf16(random_vec(size_t(N) * K, rng)), x0 = random_vec(K, rng),
                           nw = random_vec(K, rng);
  DeviceArray<bf16> gw(to_bf16(w));
  DeviceArray<float> gx0(x0), gnw(nw);
  DeviceArray<float> ys(size_t(links) * N);  // link i's output at i * N
  Scratch scratch(N, K);
  cudaStream_t st = nullptr;
  LAGSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  auto run = [&](bool sync_each) {
    ys.poison();
    LAGSERVE_CUDA_CHECK(cudaDeviceSynchronize());  // st does not wait for the legacy stream
    for (int i = 0; i < links; ++i) {
      GemvOutput out;
      out.epilogue = GemvEpilogue::kStore;
      out.y = ys.get() + size_t(i) * N;
      out.y_ld = N;
      const float* x = i == 0 ? gx0.get() : ys.get() + size_t(i - 1) * N;
      gemv(gw.get(), N, K, normed(x, gnw.get()), out, 1, scratch.get(), st);
      if (sync_each) LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
    }
    LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
    return ys.download();
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

TEST(Gemv, RefusesShapesItCannotRun) {
  EXPECT_TRUE(gemv_supports(1536, 8960, GemvEpilogue::kAdd, 0));
  EXPECT_FALSE(gemv_supports(1536, 8961, GemvEpilogue::kAdd, 0));
  EXPECT_FALSE(gemv_supports(1540, 1536, GemvEpilogue::kAdd, 0));
  EXPECT_FALSE(gemv_supports(16 * 48, 1536, GemvEpilogue::kQkvRope, 16));  // head_dim 16
  EXPECT_TRUE(gemv_supports(16 * 64, 1536, GemvEpilogue::kQkvRope, 64));
  EXPECT_TRUE(gemv_stream_supports(1536, 8960, GemvEpilogue::kAdd, 0));
  EXPECT_TRUE(gemv_stream_supports(1544, 576, GemvEpilogue::kAdd, 0));
  EXPECT_FALSE(gemv_stream_supports(1536, 8964, GemvEpilogue::kAdd, 0));
  EXPECT_FALSE(gemv_stream_supports(1540, 1536, GemvEpilogue::kAdd, 0));
  EXPECT_FALSE(gemv_stream_supports(15 * 48, 1536, GemvEpilogue::kQkvRope, 15));  // odd head_dim
  EXPECT_TRUE(gemv_stream_supports(16 * 48, 1536, GemvEpilogue::kQkvRope, 16));
}

}  // namespace
}  // namespace lagserve::kernels::cuda
