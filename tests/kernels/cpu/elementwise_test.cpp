// rmsnorm, rope_neox and swiglu against direct formulas, plus RoPE's defining
// property: q.k after rotation depends only on the distance of positions.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "kernels/cpu/vec_math.h"

namespace lagserve::kernels {
namespace {

TEST(RmsNorm, MatchesFormulaInPlace) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  const int rows = 3, dim = 50;
  std::vector<float> x(rows * dim), w(dim), y;
  for (float& f : x) f = nd(rng) * 10;
  for (float& f : w) f = nd(rng);
  y = x;
  rmsnorm(y.data(), w.data(), y.data(), rows, dim, 1e-5f);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double inv = 1 / std::sqrt(ss / dim + 1e-5);
    for (int i = 0; i < dim; ++i) EXPECT_NEAR(y[r * dim + i], x[r * dim + i] * inv * w[i], 1e-5);
  }
}

TEST(Rope, RotatesHalvesAndPreservesRelativePosition) {
  const int hd = 16, half = hd / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) inv[i] = std::pow(10000.f, -2.f * i / hd);
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  std::vector<float> q(hd), k(hd);
  for (float& f : q) f = nd(rng);
  for (float& f : k) f = nd(rng);
  auto rotated = [&](std::vector<float> v, int pos) {
    rope_neox(v.data(), 1, hd, 1, hd, &pos, inv.data());
    return v;
  };
  // Direct formula for one position.
  const int p = 5;
  auto r = rotated(q, p);
  for (int i = 0; i < half; ++i) {
    const float c = std::cos(p * inv[i]), s = std::sin(p * inv[i]);
    EXPECT_NEAR(r[i], q[i] * c - q[i + half] * s, 1e-5);
    EXPECT_NEAR(r[i + half], q[i + half] * c + q[i] * s, 1e-5);
  }
  auto dot = [](const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
  };
  const double d1 = dot(rotated(q, 10), rotated(k, 3));
  const double d2 = dot(rotated(q, 107), rotated(k, 100));
  EXPECT_NEAR(d1, d2, 1e-3);
  EXPECT_GT(std::fabs(d1 - dot(rotated(q, 10), rotated(k, 4))), 1e-3);
}

TEST(SwiGlu, MatchesFormula) {
  const int ff = 5;
  std::vector<float> gu = {-3, -1, 0, 1, 3, 2, 2, 2, -2, 0.5f}, out(ff);
  swiglu(gu.data(), out.data(), 1, ff);
  for (int i = 0; i < ff; ++i) {
    const double g = gu[i];
    EXPECT_NEAR(out[i], g / (1 + std::exp(-g)) * gu[ff + i], 1e-6);
  }
}

TEST(ExpVec, WithinAFewUlpOfExpf) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.001953125f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::fabs(exp_vec(x) - want) / want);
  }
  EXPECT_LT(worst, 3e-7);  // 2.5 ulp of float
  EXPECT_EQ(exp_vec(0.f), 1.0f);
  EXPECT_GT(exp_vec(-1000.f), 0.f);  // clamped, never 0 or NaN
  EXPECT_LT(exp_vec(-1000.f), 1e-37f);
}

}  // namespace
}  // namespace lagserve::kernels
