// matmul_nt (OpenBLAS sgemm/sgemv) against the triple loop, with and without
// accumulation, including the m = 1 path.
#include "kernels/cpu/matmul.h"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace lagserve::kernels {
namespace {

TEST(Matmul, MatchesReference) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (auto [m, n, k] : {std::tuple{1, 7, 5}, {1, 576, 576}, {3, 17, 33}, {64, 96, 128},
                        {129, 31, 257}}) {
    for (bool acc : {false, true}) {
      std::vector<float> x(m * k), w(n * k), y(m * n), ref(m * n);
      for (float& f : x) f = nd(rng);
      for (float& f : w) f = nd(rng);
      for (size_t i = 0; i < y.size(); ++i) y[i] = ref[i] = nd(rng);
      matmul_nt(x.data(), w.data(), y.data(), m, n, k, acc);
      matmul_nt_reference(x.data(), w.data(), ref.data(), m, n, k, acc);
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i], ref[i], 1e-4f * std::sqrt(static_cast<float>(k)))
            << m << "x" << n << "x" << k << " acc " << acc << " at " << i;
      }
    }
  }
}

}  // namespace
}  // namespace lagserve::kernels
