// Sampler: logit processing (bias, bans, penalties, temperature, top-k/p, min-p)
// and a seeded categorical draw, in O(vocab) without sorting the vocabulary.
#include "engine/runtime/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <limits>

#include <fmt/format.h>

#include "engine/common/check.h"

namespace lagserve::runtime {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Below this temperature sampling is greedy (vLLM uses the same epsilon).
constexpr float kGreedyTemperature = 1e-5f;
// top_k up to this size is found with a min-heap scan, larger with nth_element.
constexpr int32_t kHeapTopK = 1024;
constexpr size_t kBlock = 1024;  // ids per block of the argmax and of the two-level draw

bool is_greedy(const SamplingParams& p) { return p.temperature < kGreedyTemperature; }

// NOTE: the loops over the vocabulary below are written to vectorize under
// GCC's default -ftrapping-math on any x86-64 level: no calls, no float->int
// conversions, no selects between floats (those become branches without
// AVX-512 masks); keep_if masks bits instead.

// v where cond holds, else +0.
inline float keep_if(bool cond, float v) {
  return std::bit_cast<float>(std::bit_cast<int32_t>(v) & -static_cast<int32_t>(cond));
}

// e^x for x <= 0 (0 below -87, where e^x leaves the normal floats; so 0 for
// -inf) to about 2e-7 relative error.
inline float exp_nonpositive(float x) {
  // x = n*ln2 + r with |r| <= ln2/2. Adding 1.5*2^23 rounds to an integer and
  // leaves n in the low mantissa bits. ln2 is split so that n*kLn2Hi is exact.
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23, bits 0x4B400000
  const float t = x * 1.44269504f + kRound;
  const float n = t - kRound;
  const int32_t n_int = std::bit_cast<int32_t>(t) - 0x4B400000;
  constexpr float kLn2Hi = 0.693145751953125f;  // 45426 / 2^16
  constexpr float kLn2Lo = 1.42860682e-6f;      // ln2 - kLn2Hi
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  // Taylor series to r^6: the remainder is below 1.3e-7 for |r| <= 0.347.
  const float poly =
      1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120 + r * (1.f / 720))))));
  // 2^n for n in [-126, 0]; outside (x < -87, -inf, NaN) the bits are garbage
  // and the mask drops them.
  const float scale = std::bit_cast<float>(static_cast<uint32_t>(n_int + 127) << 23);
  return keep_if(x >= -87.0f, poly * scale);
}

// Sum of w[i] over the ids with x[i] >= t (all of w when t is -inf and w has
// no NaN), in 16 independent double lanes: that vectorizes without
// -ffast-math, and the fixed order keeps the result reproducible.
double sum_where_at_least(std::span<const float> x, float t, std::span<const float> w) {
  double lanes[16] = {};
  size_t i = 0;
  for (; i + 16 <= w.size(); i += 16) {
    for (size_t l = 0; l < 16; ++l) lanes[l] += keep_if(x[i + l] >= t, w[i + l]);
  }
  double s = 0;
  for (double lane : lanes) s += lane;
  for (; i < w.size(); ++i) s += keep_if(x[i] >= t, w[i]);
  return s;
}

// Floats as integers in the same order (NaN aside): integer max reductions
// vectorize, float ones do not without -ffast-math.
inline int32_t order_key(float f) {
  const int32_t b = std::bit_cast<int32_t>(f);
  return b ^ ((b >> 31) & 0x7fffffff);
}

float max_value(std::span<const float> x) {
  int32_t key = std::numeric_limits<int32_t>::min();
  for (float v : x) key = std::max(key, order_key(v));
  return std::bit_cast<float>(key ^ ((key >> 31) & 0x7fffffff));
}

// First id holding the maximum (greedy ties go to the lower id): block maxima
// in one vectorized pass, then a search inside the first block holding it.
int32_t argmax(std::span<const float> x) {
  float best = kNegInf;
  size_t best_begin = 0;
  for (size_t begin = 0; begin < x.size(); begin += kBlock) {
    const float m = max_value(x.subspan(begin, std::min(kBlock, x.size() - begin)));
    if (m > best) {
      best = m;
      best_begin = begin;
    }
  }
  LAGSERVE_CHECK(best > kNegInf, "every token is banned or at -inf (vocab {})", x.size());
  return static_cast<int32_t>(std::find(x.begin() + best_begin, x.end(), best) - x.begin());
}

// w[i] = exp(x[i] - m) where x[i] >= lower, else 0, block by block (so the
// sum reads the block from L1). Fills block_mass; returns the total.
double fill_weights(std::span<const float> x, float m, float lower, std::span<float> w,
                    std::vector<double>& block_mass) {
  block_mass.resize((x.size() + kBlock - 1) / kBlock);
  double total = 0;
  for (size_t b = 0; b < block_mass.size(); ++b) {
    const size_t begin = b * kBlock, end = std::min(x.size(), begin + kBlock);
    for (size_t i = begin; i < end; ++i) w[i] = keep_if(x[i] >= lower, exp_nonpositive(x[i] - m));
    const auto block = w.subspan(begin, end - begin);
    total += block_mass[b] = sum_where_at_least(block, kNegInf, block);
  }
  return total;
}

// Steps 1-4: work = logits * scale, then bias, bans and penalties, their
// additive constants times scale too (see the NOTE in the header). counts:
// [vocab], all zero on entry and on return.
void prepare(std::span<const float> logits, const SamplingParams& p, float scale,
             std::span<const int32_t> prompt, std::span<const int32_t> output,
             std::span<const int32_t> banned, SamplerScratch& s) {
  const auto vocab = static_cast<int32_t>(logits.size());
  s.work.resize(vocab);
  if (s.counts.size() != logits.size()) s.counts.assign(vocab, 0);
  std::span<float> work(s.work);
  if (scale == 1.f) {
    std::copy(logits.begin(), logits.end(), work.begin());
  } else {
    for (int32_t i = 0; i < vocab; ++i) work[i] = logits[i] * scale;
  }
  auto check_id = [vocab](int32_t id) {
    LAGSERVE_CHECK(id >= 0 && id < vocab, "token id {} outside the vocabulary of {}", id, vocab);
  };
  for (const auto& [id, bias] : p.logit_bias) {
    check_id(id);
    work[id] += bias * scale;
  }
  for (int32_t id : banned) {
    check_id(id);
    work[id] = kNegInf;
  }
  const bool repetition = p.repetition_penalty != 1.f;
  const bool additive = p.presence_penalty != 0.f || p.frequency_penalty != 0.f;
  if (!repetition && !additive) return;
  // NOTE: this walks the whole prompt every token (as vLLM does); it costs far
  // less than the pass over the vocabulary for prompts up to ~10^5 tokens.
  const float rp = p.repetition_penalty;
  auto penalize = [rp](float l) { return l > 0 ? l / rp : l * rp; };
  std::vector<int32_t>& counts = s.counts;
  for (int32_t id : output) {
    check_id(id);
    ++counts[id];
  }
  // counts[id] == -1 marks an id already penalized.
  for (int32_t id : output) {
    const int32_t c = counts[id];
    if (c <= 0) continue;
    const float l = repetition ? penalize(work[id]) : work[id];
    work[id] = l - (p.frequency_penalty * static_cast<float>(c) + p.presence_penalty) * scale;
    counts[id] = -1;
  }
  if (repetition) {
    for (int32_t id : prompt) {
      check_id(id);
      if (counts[id] != 0) continue;
      work[id] = penalize(work[id]);
      counts[id] = -1;
    }
    for (int32_t id : prompt) counts[id] = 0;
  }
  for (int32_t id : output) counts[id] = 0;
}

// Scans test chunks of 64 values at once (vectorized) and look at single
// values only in the rare chunks that hold a hit.
constexpr size_t kChunk = 64;
inline bool chunk_any_greater(const float* x, float t) {
  int any = 0;
  for (size_t l = 0; l < kChunk; ++l) any |= x[l] > t;
  return any != 0;
}
inline int chunk_count_at_least(const float* x, float t) {
  int count = 0;
  for (size_t l = 0; l < kChunk; ++l) count += x[l] >= t;
  return count;
}

// The k-th largest value of x (ties counted), k in [1, x.size()). On return
// scratch[0, k) holds the k largest values.
float kth_largest(std::span<const float> x, int32_t k, std::vector<float>& scratch) {
  if (k > kHeapTopK) {
    scratch.assign(x.begin(), x.end());
    std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<float>());
    return scratch[k - 1];
  }
  // A min-heap of the k largest so far; few values beat its minimum.
  scratch.assign(x.begin(), x.begin() + k);
  std::make_heap(scratch.begin(), scratch.end(), std::greater<float>());
  auto offer = [&](size_t i) {
    if (!(x[i] > scratch.front())) return;
    std::pop_heap(scratch.begin(), scratch.end(), std::greater<float>());
    scratch.back() = x[i];
    std::push_heap(scratch.begin(), scratch.end(), std::greater<float>());
  };
  size_t i = k;
  for (; i < x.size() && i % kChunk != 0; ++i) offer(i);
  for (; i + kChunk <= x.size(); i += kChunk) {
    if (!chunk_any_greater(&x[i], scratch.front())) continue;
    for (size_t j = i; j < i + kChunk; ++j) offer(j);
  }
  for (; i < x.size(); ++i) offer(i);
  return scratch.front();
}

// top_p cut: the largest logit t such that the tokens strictly above t hold
// less than `need` of the mass (vLLM keeps a token iff the mass above it is
// < top_p). A weighted quickselect: expected O(n), no sort.
// cands: (logit, weight), permuted in place.
float top_p_threshold(std::vector<std::pair<float, float>>& cands, double need) {
  size_t lo = 0, hi = cands.size();
  while (lo < hi) {
    const float a = cands[lo].first, b = cands[lo + (hi - lo) / 2].first, c = cands[hi - 1].first;
    const float pivot = std::max(std::min(a, b), std::min(std::max(a, b), c));  // median of 3
    // Three-way partition of [lo, hi): [> pivot | == pivot | < pivot].
    size_t gt = lo, i = lo, lt = hi;
    double mass_gt = 0, mass_eq = 0;
    while (i < lt) {
      const float l = cands[i].first;
      if (l > pivot) {
        mass_gt += cands[i].second;
        std::swap(cands[i++], cands[gt++]);
      } else if (l < pivot) {
        std::swap(cands[i], cands[--lt]);
      } else {
        mass_eq += cands[i++].second;
      }
    }
    if (mass_gt >= need) {
      hi = gt;  // the cut lies strictly above the pivot
    } else if (mass_gt + mass_eq >= need) {
      return pivot;
    } else {
      need -= mass_gt + mass_eq;
      lo = lt;
    }
  }
  // Only rounding gets here (the candidates hold less than `need`): keep all.
  float lowest = kNegInf;
  for (const auto& c : cands) lowest = lowest == kNegInf ? c.first : std::min(lowest, c.first);
  return lowest;
}

// Weight bins for top_p: the top 12 bits of the float (8 exponent and 4
// mantissa bits), so a bin is 1/16 of an octave; weights lie in [0, 1].
constexpr int kWeightBinShift = 19;
constexpr int32_t kWeightBins = (0x3F800000 >> kWeightBinShift) + 1;
constexpr int kHistCopies = 4;  // interleaved, to shorten chains of adds to one bin
inline int32_t weight_bin(float w) { return std::bit_cast<int32_t>(w) >> kWeightBinShift; }
inline bool chunk_any_in_bin(const float* w, int32_t bin) {
  int any = 0;
  for (size_t l = 0; l < kChunk; ++l) any |= weight_bin(w[l]) == bin;
  return any != 0;
}

// A skip threshold for top_p: the largest c * 4^j (j < 8) such that the
// weights >= it hold `need`, so the cut lies at or above it. Binary search:
// three vectorized passes.
float top_p_skip(std::span<const float> w, float c, double need) {
  int lo = 0, hi = 7;  // level lo always holds `need`
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (sum_where_at_least(w, c * static_cast<float>(1 << (2 * mid)), w) >= need * (1 + 1e-6)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return c * static_cast<float>(1 << (2 * lo));
}

// top_p over the whole vocabulary: the largest scaled logit t such that the
// tokens strictly above t hold less than `need` (vLLM keeps a token iff the
// mass above it is < top_p). A histogram of the mass by weight finds the bin
// holding the cut; a weighted quickselect inside that bin finds the token.
// Only weights >= skip (which is at most the cut's) need to enter the
// histogram; extra lighter ones are harmless.
float top_p_cut(double need, float skip, SamplerScratch& s) {
  std::span<const float> scaled(s.work), w(s.weights);
  const size_t n = w.size();
  // Masses in fixed point (2^-40 units; the weights are at most 1): integer
  // adds are exact and avoid cvtss2sd, whose false dependency on its output
  // register chains every iteration to the previous one.
  s.hist.assign(kHistCopies * kWeightBins, 0);
  auto add = [&](size_t i) {
    s.hist[(i % kHistCopies) * kWeightBins + weight_bin(w[i])] += static_cast<int64_t>(w[i] * 0x1p40f);
  };
  size_t i = 0;
  for (; i + kChunk <= n; i += kChunk) {
    const int count = chunk_count_at_least(&w[i], skip);
    if (count == 0) continue;
    for (size_t j = i; j < i + kChunk; ++j) {
      if (count > static_cast<int>(kChunk / 8) || w[j] >= skip) add(j);  // dense: no branch misses
    }
  }
  for (; i < n; ++i) add(i);
  double above = 0;
  int32_t bin = kWeightBins - 1;
  for (; bin > 0; --bin) {
    double mass = 0;
    for (int c = 0; c < kHistCopies; ++c) mass += static_cast<double>(s.hist[c * kWeightBins + bin]);
    mass *= 0x1p-40;
    if (above + mass >= need) break;
    above += mass;
  }
  if (bin == 0) return kNegInf;  // only rounding gets here: keep all
  s.cands.clear();
  auto take = [&](size_t i) {
    if (weight_bin(w[i]) == bin) s.cands.emplace_back(scaled[i], w[i]);
  };
  for (i = 0; i + kChunk <= n; i += kChunk) {
    if (!chunk_any_in_bin(&w[i], bin)) continue;
    for (size_t j = i; j < i + kChunk; ++j) take(j);
  }
  for (; i < n; ++i) take(i);
  return top_p_threshold(s.cands, need - above);
}

// Steps 5-7 on the scaled logits in s.work.
struct Cut {
  float t;         // exactly the ids with scaled >= t survive top_k, top_p and min_p
  bool beyond_k;   // t cuts deeper than the top_k cut (s.weights is not yet masked by it)
};

// Fills s.weights (masked by the top_k cut) and s.block_mass.
Cut filter(const SamplingParams& p, SamplerScratch& s) {
  std::span<const float> scaled(s.work);
  const auto vocab = static_cast<int32_t>(scaled.size());
  const float m = max_value(scaled);
  LAGSERVE_CHECK(m > kNegInf && !std::isnan(m), "no finite maximum logit: {} (vocab {})", m, vocab);
  const bool top_k = p.top_k > 0 && p.top_k < vocab;
  const float t_k = top_k ? kth_largest(scaled, p.top_k, s.select) : kNegInf;
  s.weights.resize(vocab);
  const double z = fill_weights(scaled, m, t_k, s.weights, s.block_mass);
  float t_p = kNegInf;
  if (p.top_p < 1.f && top_k) {
    // The top_p cut lies among the k largest: select among them only. (Extra
    // ties with the k-th are missing here, but a cut at the k-th keeps them.)
    s.cands.clear();
    for (int32_t i = 0; i < p.top_k; ++i) {
      s.cands.emplace_back(s.select[i], exp_nonpositive(s.select[i] - m));
    }
    t_p = top_p_threshold(s.cands, p.top_p * z);
  } else if (p.top_p < 1.f) {
    // Tokens lighter than c hold less than (1 - top_p) of the mass together,
    // so none of them can be the cut: skip them (most of a real vocabulary).
    const double c = 0.5 * (1.0 - p.top_p) * z / vocab;
    const float c_min = std::max(static_cast<float>(c), std::numeric_limits<float>::min());
    t_p = top_p_cut(p.top_p * z, top_p_skip(s.weights, c_min, p.top_p * z), s);
  }
  const float t_min = p.min_p > 0.f ? m + std::log(p.min_p) : kNegInf;
  const float t = std::max({t_k, t_p, t_min});
  return {t, t > t_k};
}

// A draw among the ids that survive the cut, with probability proportional to
// their weight, at the uniform u01 in [0, 1) (Sampler::next_uniform). Two levels (block sums, then a walk inside one block) so that
// no pass over the vocabulary is a serial chain of additions.
int32_t draw(const Cut& cut, SamplerScratch& s, double u01) {
  std::span<const float> scaled(s.work), w(s.weights);
  std::vector<double>& block_mass = s.block_mass;
  double total = 0;
  for (size_t b = 0; b < block_mass.size(); ++b) {
    if (cut.beyond_k) {
      const size_t begin = b * kBlock, n = std::min(kBlock, w.size() - begin);
      block_mass[b] = sum_where_at_least(scaled.subspan(begin, n), cut.t, w.subspan(begin, n));
    }
    total += block_mass[b];
  }
  LAGSERVE_CHECK(total > 0, "no token has positive probability");
  double u = u01 * total;
  size_t b = 0;
  while (b + 1 < block_mass.size() && (block_mass[b] == 0 || u >= block_mass[b])) {
    u -= block_mass[b];
    ++b;
  }
  // Rounding may leave u just past the last positive block: step back to it.
  while (block_mass[b] == 0 && b > 0) --b;
  const size_t begin = b * kBlock, end = std::min(w.size(), begin + kBlock);
  double acc = 0;
  size_t last_kept = begin;
  for (size_t i = begin; i < end; ++i) {
    if (!(scaled[i] >= cut.t) || w[i] <= 0.f) continue;
    acc += w[i];
    last_kept = i;
    if (u < acc) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last_kept);
}

// Logprobs from the raw logits: log-softmax of the chosen token and the top n.
void fill_logprobs(std::span<const float> raw, int32_t n, SamplerScratch& s, SampleResult& out) {
  const float m = max_value(raw);
  s.weights.resize(raw.size());
  const double log_z = m + std::log(fill_weights(raw, m, kNegInf, s.weights, s.block_mass));
  out.logprob = static_cast<float>(raw[out.token] - log_z);
  // The n best by (logit desc, id asc), in .logprob until the end; ids come
  // in ascending order, so an equal logit never displaces an earlier entry.
  out.top.clear();
  out.top.reserve(n);
  auto offer = [&](int32_t i) {
    if (static_cast<int32_t>(out.top.size()) == n) {
      if (!(raw[i] > out.top.back().logprob)) return;
      out.top.back() = {i, raw[i]};
    } else {
      out.top.push_back({i, raw[i]});
    }
    for (size_t j = out.top.size() - 1; j > 0 && out.top[j - 1].logprob < out.top[j].logprob; --j) {
      std::swap(out.top[j - 1], out.top[j]);
    }
  };
  const auto vocab = static_cast<int32_t>(raw.size());
  const auto chunk = static_cast<int32_t>(kChunk);
  int32_t i = 0;
  if (n > 0) {
    for (; i < n || (i < vocab && i % chunk != 0); ++i) offer(i);
    for (; i + chunk <= vocab; i += chunk) {
      if (!chunk_any_greater(&raw[i], out.top.back().logprob)) continue;
      for (int32_t j = i; j < i + chunk; ++j) offer(j);
    }
    for (; i < vocab; ++i) offer(i);
  }
  for (auto& t : out.top) t.logprob = static_cast<float>(t.logprob - log_z);
}

absl::Status out_of_range(std::string_view field, std::string_view range, double value) {
  return absl::InvalidArgumentError(fmt::format("{} must be in {}, got {}", field, range, value));
}

}  // namespace

absl::Status validate(const SamplingParams& p, int32_t vocab_size) {
  if (!(p.temperature >= 0.f && std::isfinite(p.temperature))) {
    return out_of_range("temperature", "[0, inf)", p.temperature);
  }
  if (!(p.top_p > 0.f && p.top_p <= 1.f)) return out_of_range("top_p", "(0, 1]", p.top_p);
  if (!(p.min_p >= 0.f && p.min_p <= 1.f)) return out_of_range("min_p", "[0, 1]", p.min_p);
  if (!(p.repetition_penalty > 0.f && std::isfinite(p.repetition_penalty))) {
    return out_of_range("repetition_penalty", "(0, inf)", p.repetition_penalty);
  }
  if (!(p.presence_penalty >= -2.f && p.presence_penalty <= 2.f)) {
    return out_of_range("presence_penalty", "[-2, 2]", p.presence_penalty);
  }
  if (!(p.frequency_penalty >= -2.f && p.frequency_penalty <= 2.f)) {
    return out_of_range("frequency_penalty", "[-2, 2]", p.frequency_penalty);
  }
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(fmt::format(
          "logit_bias: token id {} is outside the vocabulary [0, {})", id, vocab_size));
    }
    if (!(bias >= -100.f && bias <= 100.f)) {
      return out_of_range(fmt::format("logit_bias of token {}", id), "[-100, 100]", bias);
    }
  }
  if (p.logprobs < -1 || p.logprobs > std::min(kMaxLogprobs, vocab_size)) {
    return out_of_range("logprobs", fmt::format("[-1, {}]", std::min(kMaxLogprobs, vocab_size)),
                        p.logprobs);
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, uint64_t fallback_seed)
    : params_(params), rng_(params.seed.value_or(fallback_seed)) {}

SampleResult Sampler::sample(std::span<const float> logits, std::span<const int32_t> prompt_tokens,
                             std::span<const int32_t> output_tokens,
                             std::span<const int32_t> banned) {
  LAGSERVE_CHECK(!logits.empty(), "empty logits");
  const bool greedy = is_greedy(params_);
  prepare(logits, params_, greedy ? 1.f : 1.f / params_.temperature, prompt_tokens, output_tokens,
          banned, scratch_);
  SampleResult result{};
  result.token = greedy ? argmax(scratch_.work) : draw(filter(params_, scratch_), scratch_, next_uniform());
  if (params_.logprobs >= 0) fill_logprobs(logits, params_.logprobs, scratch_, result);
  return result;
}

double Sampler::next_uniform() {
  if (is_greedy(params_)) return 0.0;
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // 53 random bits, the same on every platform
}

std::vector<float> sampler_process_logits(std::span<const float> logits,
                                          const SamplingParams& params,
                                          std::span<const int32_t> prompt_tokens,
                                          std::span<const int32_t> output_tokens,
                                          std::span<const int32_t> banned) {
  SamplerScratch s;
  const bool greedy = is_greedy(params);
  prepare(logits, params, greedy ? 1.f : 1.f / params.temperature, prompt_tokens, output_tokens,
          banned, s);
  if (greedy) return s.work;
  const Cut cut = filter(params, s);
  for (float& l : s.work) {
    if (!(l >= cut.t)) l = kNegInf;
  }
  return s.work;
}

}  // namespace lagserve::runtime
