// Sampler tests: greedy, seeding, draws against softmax with chi-square bounds
// (p = 1e-6, and a wrong distribution must fail them), top-k/top-p/min-p sets
// against a sorting reference, penalties and bias against the formulas,
// logprobs against a double log-softmax, and validate().
#include "engine/runtime/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

namespace lagserve::runtime {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kPValue = 1e-6;

// Survival function of the chi-square distribution with df degrees of
// freedom: Q(x; k+2) = Q(x; k) + (x/2)^(k/2) e^(-x/2) / Gamma(k/2 + 1).
double chi2_sf(double x, int df) {
  int k = df % 2 == 0 ? 2 : 1;
  double q = k == 2 ? std::exp(-x / 2) : std::erfc(std::sqrt(x / 2));
  for (; k < df; k += 2) {
    q += std::exp(k / 2.0 * std::log(x / 2) - x / 2 - std::lgamma(k / 2.0 + 1));
  }
  return q;
}

// Pearson's statistic of counts against probabilities p; counts where p is 0
// must be 0. Returns the p-value.
double chi2_pvalue(const std::vector<int>& counts, const std::vector<double>& p) {
  const double n = std::accumulate(counts.begin(), counts.end(), 0.0);
  double stat = 0;
  int df = -1;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    const double e = n * p[i];
    stat += (counts[i] - e) * (counts[i] - e) / e;
    ++df;
  }
  return chi2_sf(stat, std::max(df, 1));
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature) {
  double m = -kInf;
  for (float l : logits) m = std::max(m, static_cast<double>(l));
  std::vector<double> p(logits.size());
  double z = 0;
  for (size_t i = 0; i < p.size(); ++i) z += p[i] = std::exp((logits[i] - m) / temperature);
  for (double& x : p) x /= z;
  return p;
}

std::vector<int> draw_counts(const std::vector<float>& logits, const SamplingParams& params,
                             int n_draws, uint64_t seed = 1) {
  Sampler sampler(params, seed);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < n_draws; ++i) ++counts[sampler.sample(logits, {}, {}, {}).token];
  return counts;
}

std::vector<float> random_logits(int n, uint64_t seed, float stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, stddev);
  std::vector<float> l(n);
  for (float& x : l) x = normal(rng);
  return l;
}

// Reference filter with a full sort: top_k (ties kept), top_p over the top_k
// survivors renormalized (keep while the mass above < top_p), min_p. Returns
// the kept ids, or nothing when a cut is too close to call in float.
std::optional<std::set<int>> reference_kept(const std::vector<float>& logits,
                                            const SamplingParams& p) {
  std::vector<double> x(logits.begin(), logits.end());
  for (double& v : x) v /= p.temperature;
  std::vector<int> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return x[a] > x[b]; });
  size_t n = order.size();
  if (p.top_k > 0 && p.top_k < static_cast<int>(n)) n = p.top_k;
  const double m = x[order[0]];
  double z = 0;
  for (size_t i = 0; i < n; ++i) z += std::exp(x[order[i]] - m);
  if (p.top_p < 1) {
    double above = 0, last = 0;
    size_t keep = 0;
    while (keep < n && above < p.top_p * z) {
      above += last = std::exp(x[order[keep]] - m);
      ++keep;
    }
    // The mass above the last kept token and above the first dropped one.
    if (std::abs((above - last) / z - p.top_p) < 1e-6 || std::abs(above / z - p.top_p) < 1e-6) {
      return std::nullopt;
    }
    n = keep;
  }
  std::set<int> kept;
  for (size_t i = 0; i < n; ++i) {
    const double ratio = std::exp(x[order[i]] - m);
    if (p.min_p > 0 && std::abs(ratio - p.min_p) < 1e-5) return std::nullopt;
    if (ratio >= p.min_p) kept.insert(order[i]);
  }
  return kept;
}

std::set<int> finite_ids(const std::vector<float>& processed) {
  std::set<int> ids;
  for (size_t i = 0; i < processed.size(); ++i) {
    if (processed[i] > -kInf) ids.insert(static_cast<int>(i));
  }
  return ids;
}

TEST(Sampler, GreedyPicksArgmaxAndLowerIdOnTies) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, 0);
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.f, -2.f, 2.9f}, {}, {}, {}).token, 1);
  EXPECT_EQ(s.sample(std::vector<float>{1.f, 5.f, 2.f, 5.f, 5.f}, {}, {}, {}).token, 1);
  // Bans and penalties apply before the argmax.
  EXPECT_EQ(s.sample(std::vector<float>{1.f, 5.f, 2.f, 4.f}, {}, {}, std::vector<int32_t>{1}).token, 3);
  p.repetition_penalty = 2.f;
  Sampler rep(p, 0);
  const std::vector<int32_t> prompt = {1};
  EXPECT_EQ(rep.sample(std::vector<float>{1.f, 5.f, 2.f, 4.f}, prompt, {}, {}).token, 3);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferent) {
  const std::vector<float> logits = random_logits(500, 7, 1.f);
  auto run = [&](std::optional<uint64_t> seed, uint64_t fallback) {
    SamplingParams p;
    p.seed = seed;
    p.top_p = 0.95f;
    Sampler s(p, fallback);
    std::vector<int32_t> out;
    for (int i = 0; i < 100; ++i) out.push_back(s.sample(logits, {}, out, {}).token);
    return out;
  };
  EXPECT_EQ(run(42, 0), run(42, 0));
  EXPECT_EQ(run(42, 0), run(42, 99));  // the request's seed beats the fallback
  EXPECT_NE(run(42, 0), run(43, 0));
  EXPECT_EQ(run(std::nullopt, 5), run(std::nullopt, 5));
  EXPECT_NE(run(std::nullopt, 5), run(std::nullopt, 6));
}

TEST(Sampler, DrawsFollowSoftmaxAtTemperature) {
  const std::vector<float> logits = {1.5f, 1.0f, 0.3f, 0.0f, -0.5f, -1.2f};
  const std::pair<float, float> cases[] = {{0.5f, 0.6f}, {1.0f, 1.15f}, {2.0f, 2.6f}};
  for (auto [t, wrong_t] : cases) {
    SamplingParams p;
    p.temperature = t;
    const std::vector<int> counts = draw_counts(logits, p, 20000, static_cast<uint64_t>(t * 100));
    EXPECT_GT(chi2_pvalue(counts, softmax(logits, t)), kPValue) << "temperature " << t;
    // The test has the power to see a wrong temperature.
    EXPECT_LT(chi2_pvalue(counts, softmax(logits, wrong_t)), kPValue) << "temperature " << t;
  }
}

TEST(Sampler, DrawsSpanBlocksOfALargeVocabulary) {
  // Mass spread over ids at the edges of the 1024-id blocks of the draw.
  std::vector<float> logits(5000, -kInf);
  const std::vector<int> ids = {0, 1023, 1024, 2047, 3000, 4095, 4096, 4999};
  for (size_t i = 0; i < ids.size(); ++i) logits[ids[i]] = 0.25f * static_cast<float>(i % 3);
  SamplingParams p;
  const std::vector<int> counts = draw_counts(logits, p, 20000);
  const std::vector<double> expected = softmax(logits, 1.0);
  EXPECT_GT(chi2_pvalue(counts, expected), kPValue);
}

TEST(Sampler, TopKTopPMinPKeepTheRightSetInTheRightProportions) {
  // Probabilities about 0.40, 0.30, 0.15, 0.10, 0.05 at temperature 1.
  std::vector<float> logits;
  for (double q : {0.40, 0.30, 0.15, 0.10, 0.05}) logits.push_back(static_cast<float>(std::log(q)));
  struct Case {
    int32_t top_k;
    float top_p, min_p;
    std::set<int> kept;
  };
  const Case cases[] = {
      {2, 1.f, 0.f, {0, 1}},       {4, 1.f, 0.f, {0, 1, 2, 3}}, {0, 0.75f, 0.f, {0, 1, 2}},
      {0, 0.5f, 0.f, {0, 1}},      {0, 0.3f, 0.f, {0}},         {0, 1.f, 0.3f, {0, 1, 2}},
      {0, 1.f, 0.2f, {0, 1, 2, 3}}, {3, 0.8f, 0.f, {0, 1}},  // top_p renormalizes over top_k
      {0, 0.9f, 0.5f, {0, 1}},
  };
  for (const Case& c : cases) {
    SamplingParams p;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.min_p = c.min_p;
    SCOPED_TRACE(testing::Message() << "top_k " << c.top_k << " top_p " << c.top_p << " min_p " << c.min_p);
    EXPECT_EQ(finite_ids(sampler_process_logits(logits, p, {}, {}, {})), c.kept);
    EXPECT_EQ(reference_kept(logits, p), c.kept);
    std::vector<float> allowed(logits.size(), -kInf);
    for (int id : c.kept) allowed[id] = logits[id];
    const std::vector<int> counts = draw_counts(logits, p, 20000, c.top_k * 100 + c.kept.size());
    EXPECT_GT(chi2_pvalue(counts, softmax(allowed, 1.0)), kPValue);  // also: none outside
    // Power check: the unfiltered distribution must fail (when it differs).
    if (c.kept.size() < logits.size() && c.kept.size() > 1) {
      std::vector<double> full = softmax(logits, 1.0);
      EXPECT_LT(chi2_pvalue(std::vector<int>(counts.begin(), counts.end()), full), kPValue);
    }
  }
}

TEST(Sampler, FiltersMatchASortingReferenceAtFullVocabulary) {
  int checked = 0;
  for (uint64_t seed = 0; seed < 24; ++seed) {
    // Flat (stddev 1) and peaked (stddev 4) distributions over 49152 ids.
    const std::vector<float> logits = random_logits(49152, seed, seed % 2 ? 4.f : 1.f);
    SamplingParams p;
    const float top_ps[] = {0.9f, 0.5f, 0.99f, 0.1f};
    p.top_p = top_ps[seed % 4];
    p.temperature = (seed % 3) ? 0.7f : 1.3f;
    p.top_k = (seed % 5 == 0) ? 3000 : (seed % 5 == 1 ? 40 : 0);
    p.min_p = (seed % 6 == 2) ? 0.05f : 0.f;
    const auto expected = reference_kept(logits, p);
    if (!expected) continue;
    ++checked;
    const std::set<int> got = finite_ids(sampler_process_logits(logits, p, {}, {}, {}));
    EXPECT_EQ(got, *expected) << "seed " << seed << ": " << got.size() << " vs " << expected->size();
    // And the sampler never leaves the set.
    Sampler s(p, seed);
    for (int i = 0; i < 200; ++i) EXPECT_TRUE(expected->count(s.sample(logits, {}, {}, {}).token));
  }
  EXPECT_GE(checked, 20);
}

TEST(Sampler, PenaltiesFollowTheFormulas) {
  const std::vector<float> logits = random_logits(64, 3, 3.f);
  const std::vector<int32_t> prompt = {1, 2, 2, 3, 10, 40};
  const std::vector<int32_t> output = {3, 4, 4, 4, 5, 10, 10, 63};
  SamplingParams p;
  p.temperature = 0;  // process = steps 1-3 only
  p.repetition_penalty = 1.3f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = -0.25f;
  const std::vector<float> got = sampler_process_logits(logits, p, prompt, output, {});
  for (int id = 0; id < 64; ++id) {
    double l = logits[id];
    const auto count = std::count(output.begin(), output.end(), id);
    const bool seen = count > 0 || std::count(prompt.begin(), prompt.end(), id) > 0;
    if (seen) l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    l -= p.frequency_penalty * count + (count > 0 ? p.presence_penalty : 0.0);
    EXPECT_NEAR(got[id], l, 1e-5 * (1 + std::abs(l))) << "token " << id;
  }
  // Temperature divides the penalized logits.
  p.temperature = 2.f;
  const std::vector<float> scaled = sampler_process_logits(logits, p, prompt, output, {});
  for (int id = 0; id < 64; ++id) EXPECT_NEAR(scaled[id], got[id] / 2, 1e-5 * (1 + std::abs(got[id])));
}

TEST(Sampler, LogitBiasForcesAndBans) {
  const std::vector<float> logits = random_logits(100, 4, 2.f);
  SamplingParams force;
  force.logit_bias = {{37, 100.f}};
  Sampler s(force, 1);
  for (int i = 0; i < 500; ++i) EXPECT_EQ(s.sample(logits, {}, {}, {}).token, 37);
  // Bans win over bias.
  Sampler s2(force, 1);
  const std::vector<int32_t> banned = {37};
  for (int i = 0; i < 500; ++i) EXPECT_NE(s2.sample(logits, {}, {}, banned).token, 37);

  std::vector<float> flat(4, 0.f);
  SamplingParams ban;
  ban.logit_bias = {{0, -100.f}, {2, -100.f}};
  const std::vector<int> counts = draw_counts(flat, ban, 20000);
  EXPECT_EQ(counts[0] + counts[2], 0);
  EXPECT_GT(chi2_pvalue({counts[1], counts[3]}, {0.5, 0.5}), kPValue);
  // The processed logits show the bias.
  SamplingParams small;
  small.temperature = 0;
  small.logit_bias = {{1, 2.5f}, {3, -1.f}};
  const std::vector<float> got = sampler_process_logits(flat, small, {}, {}, {});
  EXPECT_EQ(got, (std::vector<float>{0.f, 2.5f, 0.f, -1.f}));
}

TEST(Sampler, LogprobsAreLogSoftmaxOfRawLogits) {
  std::vector<float> logits = random_logits(1000, 5, 3.f);
  logits[17] = logits[400] = logits[900] = 20.f;  // a tie at the top: lower ids first
  SamplingParams p;
  p.logprobs = 5;
  p.temperature = 0.6f;         // none of these change the logprobs
  p.repetition_penalty = 1.5f;
  p.logit_bias = {{3, 5.f}};
  double m = -kInf, z = 0;
  for (float l : logits) m = std::max(m, static_cast<double>(l));
  for (float l : logits) z += std::exp(l - m);
  auto logprob = [&](int id) { return logits[id] - m - std::log(z); };
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });

  Sampler s(p, 9);
  const std::vector<int32_t> prompt = {17, 3};
  for (int i = 0; i < 20; ++i) {
    const SampleResult r = s.sample(logits, prompt, {}, {});
    EXPECT_NEAR(r.logprob, logprob(r.token), 1e-5);
    ASSERT_EQ(r.top.size(), 5u);
    for (int j = 0; j < 5; ++j) {
      EXPECT_EQ(r.top[j].token, order[j]);
      EXPECT_NEAR(r.top[j].logprob, logprob(order[j]), 1e-5);
    }
  }
  EXPECT_EQ(order[0], 17);
  EXPECT_EQ(order[1], 400);
  EXPECT_EQ(order[2], 900);
  p.logprobs = 0;
  const SampleResult r0 = Sampler(p, 1).sample(logits, {}, {}, {});
  EXPECT_TRUE(r0.top.empty());
  EXPECT_NEAR(r0.logprob, logprob(r0.token), 1e-5);

  // A flat distribution over a full vocabulary: log Z sums every term.
  const std::vector<float> flat = random_logits(49152, 6, 1.f);
  double flat_m = -kInf, flat_z = 0;
  for (float l : flat) flat_m = std::max(flat_m, static_cast<double>(l));
  for (float l : flat) flat_z += std::exp(l - flat_m);
  Sampler fs(p, 2);
  for (int i = 0; i < 10; ++i) {
    const SampleResult r = fs.sample(flat, {}, {}, {});
    EXPECT_NEAR(r.logprob, flat[r.token] - flat_m - std::log(flat_z), 2e-6);
  }
}

TEST(Sampler, ValidateNamesTheField) {
  EXPECT_TRUE(validate(SamplingParams{}, 100).ok());
  auto error = [](auto edit) {
    SamplingParams p;
    edit(p);
    const absl::Status s = validate(p, 100);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    return std::string(s.message());
  };
  EXPECT_NE(error([](auto& p) { p.temperature = -0.1f; }).find("temperature"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.temperature = NAN; }).find("temperature"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.top_p = 0.f; }).find("top_p"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.top_p = 1.5f; }).find("top_p"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.min_p = -0.5f; }).find("min_p"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.repetition_penalty = 0.f; }).find("repetition_penalty"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.presence_penalty = 2.5f; }).find("presence_penalty"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.frequency_penalty = -3.f; }).find("frequency_penalty"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.logit_bias = {{100, 1.f}}; }).find("logit_bias"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.logit_bias = {{-1, 1.f}}; }).find("logit_bias"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.logit_bias = {{5, 101.f}}; }).find("logit_bias"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.logprobs = -2; }).find("logprobs"), std::string::npos);
  EXPECT_NE(error([](auto& p) { p.logprobs = kMaxLogprobs + 1; }).find("logprobs"), std::string::npos);
  SamplingParams edge;
  edge.temperature = 0;
  edge.top_k = -1;
  edge.top_p = 1.f;
  edge.min_p = 1.f;
  edge.presence_penalty = -2.f;
  edge.logprobs = kMaxLogprobs;
  EXPECT_TRUE(validate(edge, 100).ok());
}

}  // namespace
}  // namespace lagserve::runtime
