// GPU sampling against runtime::sampler_process_logits: a batch of rows with
// different parameters (greedy, temperature, top_k, top_p, min_p, all three,
// penalties over prompt and output tokens, logit bias and bans, ties at the
// cut and at the maximum) in one launch, for three vocabulary sizes. Survivors
// must match except within rounding of a cut; surviving values within 1e-5;
// greedy picks the first argmax; a draw at u picks the CPU inverse CDF (softmax
// in double, ascending ids) unless u lies within 1e-5 of a CDF boundary.
#include "kernels/cuda/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "engine/runtime/sampler.h"
#include "tests/kernels/cuda/gpu_test.h"

namespace lagserve::kernels::cuda {
namespace {

using lagserve::testing::DeviceArray;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Row {
  runtime::SamplingParams params;
  std::vector<int32_t> prompt, output, banned;
  std::vector<float> logits;
};

// The rows of one batch: each a parameter combination over its own logits.
std::vector<Row> make_rows(int vocab, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 2.f);
  std::uniform_int_distribution<int32_t> id(0, vocab - 1);
  auto logits = [&](int kind) {
    std::vector<float> l(vocab);
    for (float& x : l) x = nd(rng);
    for (int i = 0; i < vocab / 20; ++i) l[id(rng)] = l[id(rng)];  // some exact ties
    if (kind == 1) {  // coarse values: many ties at any cut
      for (float& x : l) x = std::round(x * 2.f) / 2.f;
    } else if (kind == 2) {  // the maximum held by several ids
      const float top = *std::max_element(l.begin(), l.end()) + 1.f;
      for (int i : {vocab / 3, vocab / 7, vocab - 1, vocab / 2}) l[i] = top;
    }
    return l;
  };
  auto tokens = [&](int n) {
    std::vector<int32_t> t(n);
    for (int32_t& x : t) x = id(rng) % std::min(vocab, 300);  // repeats
    return t;
  };
  auto row = [&](float temperature, int top_k, float top_p, float min_p, int kind = 0) {
    Row r;
    r.params.temperature = temperature;
    r.params.top_k = top_k;
    r.params.top_p = top_p;
    r.params.min_p = min_p;
    r.logits = logits(kind);
    return r;
  };
  auto penalties = [&](Row r, float rep, float presence, float frequency) {
    r.params.repetition_penalty = rep;
    r.params.presence_penalty = presence;
    r.params.frequency_penalty = frequency;
    r.prompt = tokens(200);
    r.output = tokens(60);
    return r;
  };
  std::vector<Row> rows;
  rows.push_back(row(0.f, 0, 1.f, 0.f));
  rows.push_back(penalties(row(0.f, 0, 1.f, 0.f), 1.3f, 0.5f, 0.3f));
  rows.push_back(row(0.f, 0, 1.f, 0.f, 2));  // greedy, tied maximum
  rows.push_back(row(0.7f, 0, 1.f, 0.f));
  rows.push_back(row(1.f, 50, 1.f, 0.f));
  rows.push_back(row(0.8f, 1, 1.f, 0.f));
  rows.push_back(row(1.f, 0, 0.9f, 0.f));
  rows.push_back(row(1.3f, 0, 0.5f, 0.f));
  rows.push_back(row(1.f, 0, 1.f, 0.05f));
  rows.push_back(row(0.9f, 100, 0.8f, 0.02f));
  rows.push_back(row(1.f, vocab, 0.95f, 0.f));
  rows.push_back(penalties(row(1.1f, 200, 0.9f, 0.f), 1.2f, -0.5f, 0.7f));
  rows.push_back(penalties(row(0.5f, 0, 1.f, 0.f), 0.8f, 0.f, 0.f));
  rows.push_back(penalties(row(1.f, 0, 0.7f, 0.f), 1.f, 1.5f, -0.4f));
  rows.push_back(row(1.f, 0, 0.01f, 0.f));
  rows.push_back(row(2.f, std::min(vocab - 1, 5000), 1.f, 0.1f));
  rows.push_back(row(1.f, 50, 1.f, 0.f, 1));
  rows.push_back(row(1.f, 0, 0.6f, 0.f, 1));
  rows.push_back(row(1.f, 0, 1.f, 1.f, 2));  // min_p = 1: only the tied maximum
  {
    Row r = penalties(row(1.f, 20, 1.f, 0.f), 1.1f, 0.2f, 0.1f);
    r.params.logit_bias = {{id(rng), 5.f}, {r.output[0], -3.f}, {7 % vocab, 2.f}, {7 % vocab, 1.5f}};
    r.banned = {r.output[1], id(rng), id(rng)};
    rows.push_back(r);
  }
  return rows;
}

// CSR lists of a batch, on the device. Each array holds a trailing 0 so that none is empty.
struct DeviceLists {
  std::vector<int32_t> prompt_off{0}, prompt_ids, out_off{0}, out_ids, out_counts, bias_off{0},
      bias_ids, ban_off{0}, ban_ids;
  std::vector<float> bias_vals;
  std::vector<std::unique_ptr<DeviceArray<int32_t>>> ints;
  std::unique_ptr<DeviceArray<float>> floats;

  explicit DeviceLists(const std::vector<Row>& rows) {
    for (const Row& r : rows) {
      prompt_ids.insert(prompt_ids.end(), r.prompt.begin(), r.prompt.end());
      prompt_off.push_back(static_cast<int32_t>(prompt_ids.size()));
      std::map<int32_t, int32_t> counts;  // (id, count) pairs, any order
      for (int32_t t : r.output) ++counts[t];
      for (const auto& [t, c] : counts) out_ids.push_back(t), out_counts.push_back(c);
      out_off.push_back(static_cast<int32_t>(out_ids.size()));
      for (const auto& [t, b] : r.params.logit_bias) bias_ids.push_back(t), bias_vals.push_back(b);
      bias_off.push_back(static_cast<int32_t>(bias_ids.size()));
      ban_ids.insert(ban_ids.end(), r.banned.begin(), r.banned.end());
      ban_off.push_back(static_cast<int32_t>(ban_ids.size()));
    }
    for (auto* v : {&prompt_ids, &out_ids, &out_counts, &bias_ids, &ban_ids}) v->push_back(0);
    bias_vals.push_back(0.f);
  }
  const int32_t* up(const std::vector<int32_t>& v) {
    ints.push_back(std::make_unique<DeviceArray<int32_t>>(v));
    return ints.back()->get();
  }
  SamplingTokenLists device() {
    SamplingTokenLists l;
    l.prompt_offsets = up(prompt_off);
    l.prompt_ids = up(prompt_ids);
    l.output_offsets = up(out_off);
    l.output_ids = up(out_ids);
    l.output_counts = up(out_counts);
    l.bias_offsets = up(bias_off);
    l.bias_ids = up(bias_ids);
    floats = std::make_unique<DeviceArray<float>>(bias_vals);
    l.bias_values = floats->get();
    l.banned_offsets = up(ban_off);
    l.banned_ids = up(ban_ids);
    return l;
  }
};

SamplingRowParams to_gpu(const runtime::SamplingParams& p) {
  SamplingRowParams g;
  g.temperature = p.temperature;
  g.top_k = p.top_k;
  g.top_p = p.top_p;
  g.min_p = p.min_p;
  g.repetition_penalty = p.repetition_penalty;
  g.presence_penalty = p.presence_penalty;
  g.frequency_penalty = p.frequency_penalty;
  return g;
}

std::vector<float> cpu_process(const Row& r, const runtime::SamplingParams& p) {
  return runtime::sampler_process_logits(r.logits, p, r.prompt, r.output, r.banned);
}

// May id i survive on one side only? Yes when its value lies within 1e-6 of
// the CPU's cut, or (top_p) the mass above it lies within 1e-5 of top_p * Z.
bool borderline(const Row& r, const std::vector<float>& cpu, int i) {
  runtime::SamplingParams open = r.params;
  open.top_k = 0, open.top_p = 1.f, open.min_p = 0.f;
  const std::vector<float> pre = cpu_process(r, open);
  float cut = std::numeric_limits<float>::infinity();
  for (float x : cpu) {
    if (x > kNegInf) cut = std::min(cut, x);
  }
  if (std::abs(pre[i] - cut) <= 1e-6 * std::max(1.f, std::abs(cut))) return true;
  if (r.params.top_p >= 1.f) return false;
  const int vocab = static_cast<int>(pre.size());
  float t_k = kNegInf;
  if (r.params.top_k > 0 && r.params.top_k < vocab) {
    std::vector<float> s = pre;
    std::nth_element(s.begin(), s.begin() + (r.params.top_k - 1), s.end(), std::greater<float>());
    t_k = s[r.params.top_k - 1];
  }
  const double m = *std::max_element(pre.begin(), pre.end());
  double z = 0, above = 0;
  for (float x : pre) {
    if (!(x >= t_k)) continue;
    const double w = std::exp(x - m);
    z += w;
    if (x > pre[i]) above += w;
  }
  return std::abs(above - r.params.top_p * z) <= 1e-5 * z;
}

// Compares the GPU's processed rows with the CPU's; returns the rows whose
// survivor sets are identical.
std::vector<bool> check_processed(const std::vector<Row>& rows, const std::vector<float>& gpu,
                                  int vocab) {
  std::vector<bool> same(rows.size(), true);
  for (size_t r = 0; r < rows.size(); ++r) {
    const std::vector<float> cpu = cpu_process(rows[r], rows[r].params);
    int value_errors = 0, unexplained = 0, differing = 0;
    for (int i = 0; i < vocab; ++i) {
      const float g = gpu[r * vocab + i], c = cpu[i];
      const bool gs = g > kNegInf, cs = c > kNegInf;
      if (std::isnan(g)) {
        ++unexplained;
      } else if (gs != cs) {
        same[r] = false;
        // A handful at most is rounding; past that (a bug) skip the O(vocab) check.
        if (++differing > 64 || !borderline(rows[r], cpu, i)) ++unexplained;
      } else if (gs && std::abs(g - c) > 1e-5 * std::max(1.f, std::abs(c))) {
        ++value_errors;
      }
    }
    EXPECT_EQ(unexplained, 0) << "row " << r << ": survivors differ away from the cut";
    EXPECT_EQ(value_errors, 0) << "row " << r << ": surviving values differ";
    if (!same[r]) std::printf("row %zu: survivors differ at the cut only\n", r);
  }
  return same;
}

// The CPU inverse CDF at u over processed logits, or -1 when u lies within
// 1e-5 of a boundary of the chosen id's interval.
int32_t cpu_draw(const std::vector<float>& processed, double u) {
  const double m = *std::max_element(processed.begin(), processed.end());
  double z = 0;
  for (float x : processed) z += std::exp(static_cast<double>(x) - m);
  double cdf = 0;
  for (size_t i = 0; i < processed.size(); ++i) {
    const double p = std::exp(static_cast<double>(processed[i]) - m) / z;
    if (p == 0) continue;
    const double next = cdf + p;
    if (u < next) {
      return std::abs(u - cdf) < 1e-5 || std::abs(u - next) < 1e-5 ? -1 : static_cast<int32_t>(i);
    }
    cdf = next;
  }
  return -1;  // u beyond the rounded total
}

class Sampling : public ::testing::TestWithParam<int> {};

TEST_P(Sampling, MatchesCpuSampler) {
  LAGSERVE_REQUIRE_GPU();
  const int vocab = GetParam();
  std::mt19937 rng(vocab);
  const std::vector<Row> rows = make_rows(vocab, rng);
  const int n_rows = static_cast<int>(rows.size());
  std::vector<float> logits;
  std::vector<SamplingRowParams> params;
  for (const Row& r : rows) {
    logits.insert(logits.end(), r.logits.begin(), r.logits.end());
    params.push_back(to_gpu(r.params));
  }
  DeviceArray<float> glogits(logits), processed(logits.size());
  DeviceArray<SamplingRowParams> gparams(params);
  DeviceLists host_lists(rows);
  const SamplingTokenLists lists = host_lists.device();

  processed.poison();
  sampling_process_logits(glogits.get(), n_rows, vocab, gparams.get(), lists, processed.get(), nullptr);
  const std::vector<float> gpu = processed.download();
  const std::vector<bool> same = check_processed(rows, gpu, vocab);

  // In place gives the same.
  DeviceArray<float> inplace(logits);
  sampling_process_logits(inplace.get(), n_rows, vocab, gparams.get(), lists, inplace.get(), nullptr);
  const std::vector<float> gpu_inplace = inplace.download();
  EXPECT_EQ(0, std::memcmp(gpu.data(), gpu_inplace.data(), gpu.size() * sizeof(float)));

  std::vector<std::vector<float>> cpu(n_rows);
  for (int r = 0; r < n_rows; ++r) cpu[r] = cpu_process(rows[r], rows[r].params);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  int compared = 0;
  for (int trial = 0; trial < 12; ++trial) {
    std::vector<float> u(n_rows);
    for (int r = 0; r < n_rows; ++r) u[r] = trial < 2 ? (trial == 0 ? 0.f : 0.99999f) : ud(rng);
    DeviceArray<float> gu(u);
    DeviceArray<int32_t> tokens(n_rows);
    tokens.poison();
    processed.poison();
    sampling_sample(glogits.get(), n_rows, vocab, gparams.get(), lists, gu.get(), processed.get(),
                    tokens.get(), nullptr);
    const std::vector<int32_t> got = tokens.download();
    if (trial == 0) {  // the draw leaves the same processed logits
      const std::vector<float> again = processed.download();
      EXPECT_EQ(0, std::memcmp(gpu.data(), again.data(), gpu.size() * sizeof(float)));
    }
    for (int r = 0; r < n_rows; ++r) {
      ASSERT_TRUE(got[r] >= 0 && got[r] < vocab) << "row " << r << " token " << got[r];
      if (rows[r].params.temperature < 1e-5f) {
        const int32_t want = static_cast<int32_t>(
            std::max_element(cpu[r].begin(), cpu[r].end()) - cpu[r].begin());
        EXPECT_EQ(got[r], want) << "greedy row " << r;
        continue;
      }
      EXPECT_TRUE(cpu[r][got[r]] > kNegInf || !same[r]) << "row " << r << " drew an id the CPU filters";
      EXPECT_TRUE(gpu[static_cast<size_t>(r) * vocab + got[r]] > kNegInf) << "row " << r << " drew a filtered id";
      if (!same[r]) continue;
      const int32_t want = cpu_draw(cpu[r], u[r]);
      if (want < 0) continue;
      ++compared;
      EXPECT_EQ(got[r], want) << "row " << r << " u " << u[r];
    }
  }
  EXPECT_GT(compared, n_rows * 4);
}

INSTANTIATE_TEST_SUITE_P(Vocab, Sampling, ::testing::Values(1000, 32000, 151936));

// The wide greedy path: the first argmax of each row (std::max_element, the
// CPU reference), with the maximum tied across slices, negative rows, -inf,
// and vocabularies that do not fill the last slice.
TEST(SamplingArgmax, TakesTheFirstArgmaxOfEveryRow) {
  LAGSERVE_REQUIRE_GPU();
  for (int vocab : {1, 7, 4096, 4097, 151936}) {
    std::mt19937 rng(vocab);
    std::normal_distribution<float> nd(0.f, 3.f);
    std::uniform_int_distribution<int32_t> id(0, vocab - 1);
    const int n_rows = 6;
    std::vector<float> logits(static_cast<size_t>(n_rows) * vocab);
    for (float& x : logits) x = nd(rng);
    for (int r = 0; r < n_rows; ++r) {
      float* row = logits.data() + static_cast<size_t>(r) * vocab;
      if (r == 1) {  // the maximum at several ids, far apart
        const float top = *std::max_element(row, row + vocab) + 1.f;
        for (int32_t i : {vocab - 1, vocab / 2, vocab / 3}) row[i] = top;
      } else if (r == 2) {  // all negative, some -inf
        for (int i = 0; i < vocab; ++i) row[i] = -std::fabs(row[i]) - 1.f;
        for (int k = 0; k < vocab / 3; ++k) row[id(rng)] = kNegInf;
      } else if (r == 3) {  // all equal: id 0
        std::fill(row, row + vocab, 0.25f);
      }
    }
    DeviceArray<float> glogits(logits);
    DeviceArray<unsigned long long> keys(n_rows);
    DeviceArray<int32_t> tokens(n_rows);
    tokens.poison();
    sampling_argmax(glogits.get(), n_rows, vocab, keys.get(), tokens.get(), nullptr);
    const std::vector<int32_t> got = tokens.download();
    for (int r = 0; r < n_rows; ++r) {
      const float* row = logits.data() + static_cast<size_t>(r) * vocab;
      EXPECT_EQ(got[r], std::max_element(row, row + vocab) - row) << "vocab " << vocab << " row " << r;
    }
  }
}

}  // namespace
}  // namespace lagserve::kernels::cuda
