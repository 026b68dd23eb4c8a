// The skinny GEMMs of a decode step, one product at a time, at a few rows:
// the streaming kernel (gemv_stream_bf16, up to 8 rows), the tensor-core one
// (gemv_bf16; for the normalised inputs both with fp32 rows normalised on the
// fly and, as "mma bf16", with bf16 rows normalised before, the RMSNorm's
// time not counted) and cuBLAS (the GEMM alone, bf16 rows in, none of the
// fused ops), on the layer shapes of a model (default: Qwen2.5-1.5B). The
// last column times each of cuBLASLt's heuristic candidates for the same
// GEMM (up to --lt-algos) and gives the fastest, with its rank in cuBLASLt's
// order (0: the one cublasGemmEx takes, as a rule); --lt-sweep adds a line
// with the fastest of every configuration cuBLASLt accepts. Each product cycles
// through copies of its weights that together exceed the L2 cache, launches
// back to back on one stream as in a decode step; the figure is the mean
// time of a launch and the weight bytes it reads per second.
// The RMSNorm of the rows alone is timed too, on d_model.
//   build/bench/bench_gemv --rows 1,2,4,8,16,32
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemm_lt.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/rmsnorm.h"

namespace {

namespace kc = lagserve::kernels::cuda;
using kc::bf16;

template <typename T>
T* device_alloc(size_t n) {
  T* p = nullptr;
  LAGSERVE_CUDA_CHECK(cudaMalloc(&p, n * sizeof(T)));
  return p;
}

template <typename T>
T* device_copy(const std::vector<T>& host) {
  T* p = device_alloc<T>(host.size());
  LAGSERVE_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

std::vector<bf16> random_bf16(size_t n, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<bf16> v(n);
  for (bf16& x : v) x = __float2bfloat16(u(rng));
  return v;
}

std::vector<float> random_f32(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

constexpr int kMaxRows = 32;
constexpr int kStreamMaxRows = 8;

struct Product {
  std::string name;
  int64_t N, K;
  kc::GemvEpilogue epilogue;
  bool norm;  // fp32 rows RMS-normalised on the fly
};

// Every configuration of every cuBLASLt algorithm that cublasLtMatmulAlgoCheck
// accepts for this GEMM (tile, the two largest stage counts, split-K with
// each reduction scheme the algorithm has), up to kMaxSweep, timed by `time`
// (mean us); prints how many were timed and the five fastest with `error`'s
// figure for each (their output against cublasGemmEx's).
constexpr size_t kMaxSweep = 3000;
template <typename Time, typename Error>
void lt_sweep_product(cublasLtHandle_t lt, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la,
                      cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc, size_t ws_bytes, Time&& time,
                      Error&& error) {
  int ids[256], n_ids = 0;
  if (cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F,
                               CUDA_R_32F, 256, ids, &n_ids) != CUBLAS_STATUS_SUCCESS) {
    std::printf("    cublasLt sweep: no algorithm ids\n");
    return;
  }
  struct Found {
    double us;
    int id;
    cublasLtMatmulAlgo_t algo;
    uint32_t tile, stages, red;
    int32_t splits;
  };
  std::vector<Found> found;
  auto caps = [](const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoCapAttributes_t attr) {
    size_t bytes = 0;
    std::vector<uint32_t> v;
    if (cublasLtMatmulAlgoCapGetAttribute(&a, attr, nullptr, 0, &bytes) == CUBLAS_STATUS_SUCCESS && bytes > 0) {
      v.resize(bytes / sizeof(uint32_t));
      if (cublasLtMatmulAlgoCapGetAttribute(&a, attr, v.data(), bytes, &bytes) != CUBLAS_STATUS_SUCCESS) v.clear();
    }
    return v;
  };
  for (int k = 0; k < n_ids; ++k) {
    cublasLtMatmulAlgo_t algo;
    if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, CUDA_R_32F,
                               CUDA_R_32F, ids[k], &algo) != CUBLAS_STATUS_SUCCESS) {
      continue;
    }
    std::vector<uint32_t> tiles = caps(algo, CUBLASLT_ALGO_CAP_TILE_IDS), stages = caps(algo, CUBLASLT_ALGO_CAP_STAGES_IDS);
    if (tiles.empty()) tiles.push_back(CUBLASLT_MATMUL_TILE_UNDEFINED);
    std::sort(stages.begin(), stages.end());
    if (stages.size() > 2) stages.erase(stages.begin(), stages.end() - 2);
    if (stages.empty()) stages.push_back(CUBLASLT_MATMUL_STAGES_UNDEFINED);
    int32_t splitk_ok = 0;
    uint32_t red_mask = 0;
    size_t got = 0;
    cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitk_ok, sizeof(splitk_ok), &got);
    cublasLtMatmulAlgoCapGetAttribute(&algo, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &red_mask, sizeof(red_mask), &got);
    for (const uint32_t tile : tiles) {
      for (const uint32_t stage : stages) {
        for (const int32_t splits : {1, 2, 3, 4, 6, 8, 12, 16}) {
          if (splits > 1 && !splitk_ok) break;
          for (const uint32_t red : {CUBLASLT_REDUCTION_SCHEME_NONE, CUBLASLT_REDUCTION_SCHEME_INPLACE,
                                     CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE}) {
            if ((splits == 1) != (red == CUBLASLT_REDUCTION_SCHEME_NONE)) continue;
            if (red != CUBLASLT_REDUCTION_SCHEME_NONE && (red_mask & red) == 0) continue;
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile));
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stage, sizeof(stage));
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof(splits));
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof(red));
            cublasLtMatmulHeuristicResult_t res{};
            if (cublasLtMatmulAlgoCheck(lt, op, la, lb, lc, lc, &algo, &res) != CUBLAS_STATUS_SUCCESS ||
                res.workspaceSize > ws_bytes) {
              continue;
            }
            if (found.size() >= kMaxSweep) continue;
            found.push_back({time(algo), ids[k], algo, tile, stage, red, splits});
          }
        }
      }
    }
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.us < b.us; });
  std::printf("    cublasLt sweep: %zu configurations of %d algorithms%s; fastest (us, algo/tile/stages/splits/"
              "reduction, error):", found.size(), n_ids, found.size() >= kMaxSweep ? " (capped)" : "");
  for (size_t i = 0; i < std::min<size_t>(5, found.size()); ++i) {
    const Found& f = found[i];
    std::printf(" %.2f %d/%u/%u/%d/%u %.1e;", f.us, f.id, f.tile, f.stages, f.splits, f.red, error(f.algo));
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"skinny GEMMs of a decode step: streaming kernel, tensor-core kernel, cuBLAS"};
  int64_t d = 1536, ff = 8960, heads = 12, kv_heads = 2, head_dim = 128, vocab = 151936;
  std::string rows_arg = "1,2,4,8,16,32";
  int iters = 200;
  double flush_mb = 256;
  int lt_algos = 16;
  app.add_option("--d-model", d)->capture_default_str();
  app.add_option("--d-ff", ff)->capture_default_str();
  app.add_option("--heads", heads)->capture_default_str();
  app.add_option("--kv-heads", kv_heads)->capture_default_str();
  app.add_option("--head-dim", head_dim)->capture_default_str();
  app.add_option("--vocab", vocab)->capture_default_str();
  app.add_option("--rows", rows_arg, "comma-separated row counts (1 to 32)")->capture_default_str();
  app.add_option("--iters", iters)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--flush-mb", flush_mb, "weight copies per product add up to at least this")
      ->capture_default_str();
  app.add_option("--lt-algos", lt_algos, "cuBLASLt candidates to time (0: none)")->capture_default_str();
  bool lt_sweep = false;
  app.add_flag("--lt-sweep", lt_sweep,
               "also time every configuration cuBLASLt accepts (algorithm, tile, stages, split-K, reduction)");
  CLI11_PARSE(app, argc, argv);
  std::vector<int> rows;
  {
    std::stringstream ss(rows_arg);
    for (std::string item; std::getline(ss, item, ',');) {
      const int r = std::stoi(item);
      if (r < 1 || r > kMaxRows) {
        std::fprintf(stderr, "bench_gemv: --rows takes counts from 1 to %d, not %d\n", kMaxRows, r);
        return 2;
      }
      rows.push_back(r);
    }
  }
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::fprintf(stderr, "bench_gemv: no CUDA device\n");
    return 1;
  }
  int sms = 0;
  LAGSERVE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop{};
  LAGSERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);

  using E = kc::GemvEpilogue;
  const int64_t qkv = (heads + 2 * kv_heads) * head_dim, q_dim = heads * head_dim;
  const Product products[] = {{"qkv+rope", qkv, d, E::kQkvRope, true},
                              {"o+add", d, q_dim, E::kAdd, false},
                              {"gate_up+swiglu", 2 * ff, d, E::kSwiglu, true},
                              {"down+add", d, ff, E::kAdd, false},
                              {"head", vocab, d, E::kStore, true}};
  std::mt19937 rng(1);
  const int64_t max_k = std::max({d, q_dim, ff}), max_n = std::max({qkv, 2 * ff, vocab});
  float* x_norm = device_copy(random_f32(kMaxRows * max_k, rng, -1.f, 1.f));
  float* norm_w = device_copy(random_f32(max_k, rng, 0.5f, 1.5f));
  bf16* x = device_copy(random_bf16(kMaxRows * max_k, rng, 1.f));
  float* y = device_alloc<float>(kMaxRows * max_n);
  bf16* act = device_alloc<bf16>(kMaxRows * max_n);
  float* bias = device_copy(random_f32(qkv, rng, -0.1f, 0.1f));
  std::vector<float> freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) freq[i] = std::pow(1e6f, -2.0f * i / head_dim);
  float* inv_freq = device_copy(freq);
  std::vector<int32_t> pos(kMaxRows), slot(kMaxRows);
  for (int i = 0; i < kMaxRows; ++i) {
    pos[i] = 4096 + i;
    slot[i] = i;
  }
  int32_t* positions = device_copy(pos);
  int32_t* slots = device_copy(slot);
  const int32_t block = kMaxRows;
  bf16* kcache = device_alloc<bf16>(kv_heads * block * head_dim);
  bf16* vcache = device_alloc<bf16>(kv_heads * block * head_dim);
  cudaStream_t st = nullptr;
  LAGSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cublasHandle_t blas = nullptr;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(blas, st) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "bench_gemv: cuBLAS did not start\n");
    return 1;
  }
  cublasLtHandle_t lt = nullptr;
  if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "bench_gemv: cuBLASLt did not start\n");
    return 1;
  }
  const size_t lt_ws_bytes = 32u << 20;
  void* lt_ws = device_alloc<uint8_t>(lt_ws_bytes);
  cudaEvent_t start, stop;
  LAGSERVE_CUDA_CHECK(cudaEventCreate(&start));
  LAGSERVE_CUDA_CHECK(cudaEventCreate(&stop));
  // Mean microseconds of launch(i) over iters launches, after `warm` of them.
  auto time_launches = [&](int warm, auto&& launch) {
    for (int i = 0; i < warm; ++i) launch(i);
    LAGSERVE_CUDA_CHECK(cudaEventRecord(start, st));
    for (int i = 0; i < iters; ++i) launch(i);
    LAGSERVE_CUDA_CHECK(cudaEventRecord(stop, st));
    LAGSERVE_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    LAGSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    return 1e3 * ms / iters;
  };

  std::printf("%-15s %4s  %20s  %20s  %20s  %20s\n", "product", "rows", "stream us (GB/s)", "mma us (GB/s)",
              "mma bf16 us (GB/s)", "cublas us (GB/s)");
  std::printf("    (then: cublasLt fastest candidate us (GB/s) [rank/candidates])\n");
  for (const Product& p : products) {
    const double bytes = static_cast<double>(p.N) * p.K * sizeof(bf16);
    const int copies = std::max(2, static_cast<int>(flush_mb * 1e6 / bytes) + 1);
    std::vector<bf16*> w(copies);
    for (bf16*& c : w) {
      c = device_alloc<bf16>(p.N * p.K);
      // Random bits are enough for speed; every copy starts from the same ones.
      LAGSERVE_CUDA_CHECK(cudaMemset(c, 0x3c, p.N * p.K * sizeof(bf16)));
    }
    const int64_t ws_floats = std::max<int64_t>(1, kc::gemv_workspace_floats(p.N, p.K, sms));
    float* ws = device_alloc<float>(ws_floats);
    int32_t* counters = device_alloc<int32_t>(kc::gemv_counters(p.N));
    LAGSERVE_CUDA_CHECK(cudaMemset(counters, 0, kc::gemv_counters(p.N) * sizeof(int32_t)));
    const kc::GemvScratch scratch{ws, ws_floats, counters, kc::gemv_counters(p.N)};
    kc::GemvInput in;
    if (p.norm) {
      in.x_norm = x_norm;
      in.norm_weight = norm_w;
      in.eps = 1e-6f;
    } else {
      in.x = x;
    }
    kc::GemvOutput out;
    out.epilogue = p.epilogue;
    out.y = y;
    out.y_ld = p.N;
    out.act = act;
    out.bias = bias;
    out.positions = positions;
    out.inv_freq = inv_freq;
    out.slots = slots;
    out.kv = {kcache, vcache, static_cast<int32_t>(kv_heads), block, static_cast<int32_t>(head_dim)};
    out.n_heads = static_cast<int32_t>(heads);
    for (const int m : rows) {
      // Mean microseconds per launch over iters launches, copies in turn.
      auto time = [&](auto&& launch) {
        return time_launches(2 * copies, [&](int i) { launch(w[i % copies]); });
      };
      const double t_stream =
          m > kStreamMaxRows ? -1
                             : time([&](const bf16* wc) { kc::gemv_stream_bf16(wc, p.N, p.K, in, out, m, sms, st); });
      const double t_mma = time([&](const bf16* wc) { kc::gemv_bf16(wc, p.N, p.K, in, out, m, scratch, sms, st); });
      kc::GemvInput bf16_in;
      bf16_in.x = x;
      const double t_mma_bf16 =
          p.norm ? time([&](const bf16* wc) { kc::gemv_bf16(wc, p.N, p.K, bf16_in, out, m, scratch, sms, st); }) : -1;
      const double t_blas = time([&](const bf16* wc) { kc::gemm_bf16_nt(blas, x, wc, y, m, p.N, p.K, false); });
      auto cell = [&](double us) {
        char buf[32];
        if (us < 0) return std::string("-");
        std::snprintf(buf, sizeof(buf), "%8.2f (%6.0f)", us, bytes / (us * 1e-6) / 1e9);
        return std::string(buf);
      };
      // cuBLASLt: y^T [N, m] = w [N, K] x^T, column-major as in gemm_bf16_nt.
      double t_lt = -1;
      int lt_best = -1, lt_n = 0;
      if (lt_algos > 0) {
        const kc::LtGemmDesc desc(m, p.N, p.K);
        const cublasLtMatmulDesc_t op = desc.op;
        const cublasLtMatrixLayout_t la = desc.a, lb = desc.b, lc = desc.c;
        cublasLtMatmulPreference_t pref = nullptr;
        const bool ok = cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
                        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &lt_ws_bytes, sizeof(lt_ws_bytes)) == CUBLAS_STATUS_SUCCESS;
        std::vector<cublasLtMatmulHeuristicResult_t> cand(lt_algos);
        if (ok && cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, lt_algos, cand.data(), &lt_n) ==
                      CUBLAS_STATUS_SUCCESS) {
          const float alpha = 1.f, beta = 0.f;
          for (int i = 0; i < lt_n; ++i) {
            const double t = time([&](const bf16* wc) {
              cublasLtMatmul(lt, op, &alpha, wc, la, x, lb, &beta, y, lc, y, lc, &cand[i].algo, lt_ws,
                             lt_ws_bytes, st);
            });
            if (t_lt < 0 || t < t_lt) t_lt = t, lt_best = i;
          }
        }
        if (ok && lt_sweep) {
          const float alpha = 1.f, beta = 0.f;
          auto run = [&](const cublasLtMatmulAlgo_t& algo, const bf16* wc) {
            cublasLtMatmul(lt, op, &alpha, wc, la, x, lb, &beta, y, lc, y, lc, &algo, lt_ws, lt_ws_bytes, st);
          };
          // The output's largest error against cublasGemmEx's on the same
          // weights, relative to its largest magnitude.
          auto error = [&](const cublasLtMatmulAlgo_t& algo) {
            std::vector<float> a(static_cast<size_t>(m) * p.N), b(a.size());
            run(algo, w[0]);
            LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(a.data(), y, a.size() * sizeof(float), cudaMemcpyDeviceToHost, st));
            kc::gemm_bf16_nt(blas, x, w[0], y, m, p.N, p.K, false);
            LAGSERVE_CUDA_CHECK(cudaMemcpyAsync(b.data(), y, b.size() * sizeof(float), cudaMemcpyDeviceToHost, st));
            LAGSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
            double err = 0, scale = 0;
            for (size_t i = 0; i < a.size(); ++i) {
              err = std::max(err, static_cast<double>(std::fabs(a[i] - b[i])));
              scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
            }
            return scale > 0 ? err / scale : err;
          };
          lt_sweep_product(
              lt, op, la, lb, lc, lt_ws_bytes,
              [&](const cublasLtMatmulAlgo_t& algo) { return time([&](const bf16* wc) { run(algo, wc); }); }, error);
        }
        cublasLtMatmulPreferenceDestroy(pref);
      }
      std::printf("%-15s %4d  %20s  %20s  %20s  %20s  %20s [%d/%d]\n", p.name.c_str(), m, cell(t_stream).c_str(),
                  cell(t_mma).c_str(), cell(t_mma_bf16).c_str(), cell(t_blas).c_str(), cell(t_lt).c_str(),
                  lt_best, lt_n);
    }
    for (bf16* c : w) LAGSERVE_CUDA_CHECK(cudaFree(c));
    LAGSERVE_CUDA_CHECK(cudaFree(ws));
    LAGSERVE_CUDA_CHECK(cudaFree(counters));
  }
  // The RMSNorm that the "mma bf16" inputs need first (fp32 rows of d_model in, bf16 out).
  for (const int m : rows) {
    const double us = time_launches(10, [&](int) { kc::rmsnorm(x_norm, nullptr, norm_w, act, m, d, 1e-6f, st); });
    std::printf("%-15s %4d  %8.2f us\n", "rmsnorm", m, us);
  }
  cublasLtDestroy(lt);
  LAGSERVE_CUDA_CHECK(cudaFree(lt_ws));
  cublasDestroy(blas);
  LAGSERVE_CUDA_CHECK(cudaStreamDestroy(st));
  return 0;
}
