// lag_selected_positions (LibTorch) against engine/kv's lag_scores + lag_select:
// random policies and shapes, the 1e-6 range floor, exact ties, bf16, and CUDA.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "engine/kv/lag_policy.h"
#include "trainer/lag_select_torch.h"

namespace lagserve::trainer {
namespace {

kv::LagPolicy random_policy(std::mt19937& rng) {
  static constexpr float kWeights[] = {0.0f, 0.5f, 1.0f, 2.0f};
  kv::LagPolicyFields f;
  f.sink = static_cast<int32_t>(rng() % 7);
  f.lag = 1 + static_cast<int32_t>(rng() % 9);
  f.keep = 1 + static_cast<int32_t>(rng() % *f.lag);
  f.score_v_weight = kWeights[rng() % 4];
  auto P = kv::LagPolicy::from_fields(f);
  EXPECT_TRUE(P.ok()) << P.status();
  return *P;
}

int64_t scored_partitions(const kv::LagPolicy& P, int64_t T) {
  return std::max(0, P.complete_partitions(static_cast<int32_t>(T)) - 1);
}

struct CheckStats {
  int64_t partitions = 0;  // scored partitions compared (all batch rows and heads)
  int64_t near_ties = 0;   // of which the reference's k-th and (k+1)-th scores are within 1e-6
  int64_t near_tie_mismatches = 0;  // near ties where the selection differs
};

// Runs lag_selected_positions on `device` and compares it with the reference
// on the fp32 upcast of k and v, partition by partition. A differing selection
// is a failure unless allow_near_ties and the partition is a near tie.
CheckStats check_against_reference(const torch::Tensor& k, const torch::Tensor& v,
                                   const kv::LagPolicy& P, const torch::Device& device,
                                   bool allow_near_ties) {
  SCOPED_TRACE(P.to_string() + " k " + c10::str(k.sizes()));
  CheckStats st;
  const int64_t B = k.size(0), KVH = k.size(1), T = k.size(2), D = k.size(3);
  const int64_t n = scored_partitions(P, T), L = P.lag, keep = P.keep;
  const torch::Tensor got_t = lag_selected_positions(k.to(device), v.to(device), P);
  EXPECT_EQ(got_t.device(), device);
  EXPECT_EQ(got_t.scalar_type(), torch::kLong);
  EXPECT_FALSE(got_t.requires_grad());
  EXPECT_EQ(got_t.sizes(), (std::vector<int64_t>{B, KVH, n * keep}));
  if (::testing::Test::HasFailure()) return st;
  const torch::Tensor got = got_t.cpu().contiguous();
  const int64_t* g = got.data_ptr<int64_t>();
  const torch::Tensor kf = k.detach().cpu().to(torch::kFloat).contiguous();
  const torch::Tensor vf = v.detach().cpu().to(torch::kFloat).contiguous();
  const float* kp = kf.data_ptr<float>();
  const float* vp = vf.data_ptr<float>();
  for (int64_t bh = 0; bh < B * KVH; ++bh) {
    for (int64_t p = 0; p < n; ++p) {
      const int64_t cur = P.partition_begin(static_cast<int32_t>(p));
      const int64_t base = bh * T * D;
      const std::vector<float> scores =
          kv::lag_scores(kp + base + cur * D, kp + base + (cur + L) * D, vp + base + cur * D,
                         vp + base + (cur + L) * D, P.lag, static_cast<int32_t>(D), D,
                         P.score_v_weight);
      const std::vector<int32_t> want = kv::lag_select(scores, P.keep);
      std::vector<float> sorted = scores;
      std::sort(sorted.begin(), sorted.end(), std::greater<float>());
      bool near = false;
      if (keep < L) {
        const float a = sorted[keep - 1], b = sorted[keep];
        near = std::abs(a - b) <= 1e-6f * std::max(std::abs(a), std::abs(b));
      }
      bool same = true, valid = true;  // valid: ascending, each a top score up to 1e-6
      std::string msg;
      for (int64_t i = 0; i < keep; ++i) {
        const int64_t pos = g[(bh * n + p) * keep + i], off = pos - cur;
        same = same && pos == cur + want[i];
        valid = valid && off >= 0 && off < L && (i == 0 || pos > g[(bh * n + p) * keep + i - 1]) &&
                scores[off] >= sorted[keep - 1] * (1 - 2e-6f);
        msg += std::to_string(pos) + "/" + std::to_string(cur + want[i]) + " ";
      }
      ++st.partitions;
      st.near_ties += near ? 1 : 0;
      st.near_tie_mismatches += near && !same ? 1 : 0;
      if (!same && !(near && allow_near_ties && valid)) {
        ADD_FAILURE() << "head row " << bh << " partition " << p << " (got/want): " << msg;
        return st;
      }
    }
  }
  return st;
}

// ~50 random policies and shapes in fp32: exact agreement but for near ties,
// which must be rare and absent from most trials.
void random_trials(const torch::Device& device, uint32_t seed) {
  std::mt19937 rng(seed);
  torch::manual_seed(seed);
  CheckStats total;
  int trials_with_near_ties = 0;
  const int kTrials = 50;
  for (int trial = 0; trial < kTrials; ++trial) {
    const kv::LagPolicy P = random_policy(rng);
    const int64_t B = 1 + rng() % 2, KVH = 1 + rng() % 3, D = 2 + rng() % 15, T = 1 + rng() % 90;
    const torch::Tensor k = torch::randn({B, KVH, T, D});
    const torch::Tensor v = torch::rand({B, KVH, T, D}) * 4 - 2;
    const CheckStats st = check_against_reference(k, v, P, device, /*allow_near_ties=*/true);
    if (::testing::Test::HasFailure()) return;
    total.partitions += st.partitions;
    total.near_ties += st.near_ties;
    total.near_tie_mismatches += st.near_tie_mismatches;
    trials_with_near_ties += st.near_ties > 0 ? 1 : 0;
  }
  std::printf("[ info ] %ld scored partitions, %ld near ties (%ld selected differently), in %d of "
              "%d trials\n", long{total.partitions}, long{total.near_ties},
              long{total.near_tie_mismatches}, trials_with_near_ties, kTrials);
  EXPECT_GT(total.partitions, 1000);
  EXPECT_LE(trials_with_near_ties, kTrials / 5);
  EXPECT_LE(total.near_ties * 100, total.partitions);
}

// Channels constant over each partition (the ref range hits the 1e-6 floor):
// some all zero, some stepping by multiples of 2^-20 ~ 0.95e-6 between
// partitions, so nrm = step / 1e-6 is O(1) and depends on the floor's value.
void constant_channel_trials(const torch::Device& device) {
  std::mt19937 rng(11);
  torch::manual_seed(11);
  for (int trial = 0; trial < 20; ++trial) {
    kv::LagPolicy P = random_policy(rng);
    P.lag = std::max(P.lag, 2);
    const int64_t B = 1 + rng() % 2, KVH = 1 + rng() % 3, D = 2 + rng() % 7;
    const int64_t T = P.sink + 5 * P.lag + rng() % P.lag;
    torch::Tensor k = torch::randn({B, KVH, T, D});
    torch::Tensor v = torch::randn({B, KVH, T, D});
    for (torch::Tensor* x : {&k, &v}) {
      const int64_t n_const = 1 + rng() % (D - 1);  // at least one channel varies
      for (int64_t j = 0; j < n_const; ++j) {
        const int64_t ch = rng() % D;
        for (int64_t t0 = P.sink; t0 < T; t0 += P.lag) {  // partition by partition
          const float c = j == 0 ? 0.0f : std::ldexp(static_cast<float>(rng() % 5), -20);
          x->narrow(2, t0, std::min<int64_t>(P.lag, T - t0)).select(3, ch).fill_(c);
        }
      }
    }
    check_against_reference(k, v, P, device, /*allow_near_ties=*/false);
    if (::testing::Test::HasFailure()) return;
  }
}

// Rows repeated within a partition give exactly equal scores: the lower
// position must win. Each partition's rows come from a palette of 1-3 rows.
void exact_tie_trials(const torch::Device& device) {
  std::mt19937 rng(23);
  torch::manual_seed(23);
  for (int trial = 0; trial < 30; ++trial) {
    kv::LagPolicy P = random_policy(rng);
    P.lag = std::max(P.lag, 3);
    P.keep = 1 + static_cast<int32_t>(rng() % (P.lag - 1));
    const int64_t B = 1 + rng() % 2, KVH = 1 + rng() % 3, D = 2 + rng() % 15;
    const int64_t T = P.sink + 4 * P.lag + rng() % P.lag;
    torch::Tensor k = torch::randn({B, KVH, T, D});
    torch::Tensor v = torch::randn({B, KVH, T, D});
    for (int64_t t0 = P.sink; t0 + P.lag <= T; t0 += P.lag) {
      const int64_t palette = 1 + rng() % 3;
      for (int64_t i = palette; i < P.lag; ++i) {
        const int64_t src = t0 + static_cast<int64_t>(rng() % palette);
        k.select(2, t0 + i).copy_(k.select(2, src));
        v.select(2, t0 + i).copy_(v.select(2, src));
      }
    }
    check_against_reference(k, v, P, device, /*allow_near_ties=*/false);
    if (::testing::Test::HasFailure()) return;
  }
}

// bf16 input: the same positions as its fp32 upcast (and the reference's).
void bf16_trials(const torch::Device& device) {
  std::mt19937 rng(31);
  torch::manual_seed(31);
  for (int trial = 0; trial < 20; ++trial) {
    const kv::LagPolicy P = random_policy(rng);
    const int64_t B = 1 + rng() % 2, KVH = 1 + rng() % 3, D = 2 + rng() % 15, T = 1 + rng() % 90;
    const torch::Tensor k = torch::randn({B, KVH, T, D}).to(torch::kBFloat16).to(device);
    const torch::Tensor v = torch::randn({B, KVH, T, D}).to(torch::kBFloat16).to(device);
    const torch::Tensor got = lag_selected_positions(k, v, P);
    const torch::Tensor want = lag_selected_positions(k.to(torch::kFloat), v.to(torch::kFloat), P);
    ASSERT_TRUE(torch::equal(got, want)) << P.to_string();
    check_against_reference(k, v, P, device, /*allow_near_ties=*/true);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(LagSelectTorch, MatchesReferenceOnRandomPolicies) { random_trials(torch::kCPU, 5); }
TEST(LagSelectTorch, ConstantChannelsUseTheRangeFloor) { constant_channel_trials(torch::kCPU); }
TEST(LagSelectTorch, ExactTiesGoToTheLowerPosition) { exact_tie_trials(torch::kCPU); }
TEST(LagSelectTorch, Bf16MatchesItsFp32Upcast) { bf16_trials(torch::kCPU); }

TEST(LagSelectTorch, NothingScoredGivesAnEmptyTensor) {
  const kv::LagPolicy P = *kv::LagPolicy::parse("sink=4,lag=8,keep=2");
  for (int64_t T : {1, 4, 11, 19, 20}) {  // T = 20 = S + 2L: partition 0 is scored
    const torch::Tensor k = torch::randn({2, 3, T, 4});
    const torch::Tensor got = lag_selected_positions(k, k, P);
    EXPECT_EQ(got.sizes(), (std::vector<int64_t>{2, 3, T == 20 ? 2 : 0}));
    EXPECT_EQ(got.scalar_type(), torch::kLong);
  }
}

TEST(LagSelectTorch, TracksNoGradient) {
  const torch::Tensor k = torch::randn({1, 2, 30, 8}, torch::requires_grad());
  EXPECT_FALSE(lag_selected_positions(k * 2, k, *kv::LagPolicy::parse("lag=4")).requires_grad());
}

// The trainer's shape: B=1, KVH=3, D=64, L=128, T=8192, against the reference;
// on the CPU it also prints the time per call.
void long_sequence(const torch::Device& device) {
  const kv::LagPolicy P = *kv::LagPolicy::parse("sink=16,lag=128,keep=32");
  torch::manual_seed(3);
  const torch::Tensor k = torch::randn({1, 3, 8192, 64}).to(device);
  const torch::Tensor v = torch::randn({1, 3, 8192, 64}).to(device);
  if (device.is_cpu()) {
    lag_selected_positions(k, v, P);  // warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) lag_selected_positions(k, v, P);
    const std::chrono::duration<double, std::milli> dt = std::chrono::steady_clock::now() - t0;
    std::printf("[ info ] T=8192 B=1 KVH=3 D=64 L=128 on the CPU: %.2f ms per call\n",
                dt.count() / 10);
  }
  const CheckStats st = check_against_reference(k, v, P, device, /*allow_near_ties=*/true);
  EXPECT_EQ(st.partitions, 3 * 62);
  EXPECT_LE(st.near_ties, 2);
}
TEST(LagSelectTorch, LongSequence) { long_sequence(torch::kCPU); }

TEST(LagSelectTorch, Cuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA, 0);
  random_trials(cuda, 5);
  constant_channel_trials(cuda);
  exact_tie_trials(cuda);
  bf16_trials(cuda);
  long_sequence(cuda);
}

}  // namespace
}  // namespace lagserve::trainer
