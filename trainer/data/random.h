// Portable random helpers for the data layer: the std distributions are
// implementation-defined, so everything here draws raw mt19937_64 output.
#pragma once

#include <cstdint>
#include <random>

namespace lagserve::trainer {

// Uniform integer in [0, n) without modulo bias. Precondition: n > 0.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  // Values below 2^64 mod n are rejected so the rest splits evenly into n classes.
  const uint64_t threshold = (0 - n) % n;
  uint64_t x = rng();
  while (x < threshold) x = rng();
  return x % n;
}

// Uniform integer in [lo, hi]. Precondition: lo <= hi.
inline int64_t uniform_between(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(hi - lo) + 1));
}

// Uniform double in [0, 1) from the top 53 bits.
inline double uniform_unit(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
}

// SplitMix64 finaliser: decorrelates nearby seeds (seed, seed + 1, ...).
inline uint64_t mix_seed(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Picks one element of a non-empty array.
template <typename T, size_t N>
const T& pick(std::mt19937_64& rng, const T (&items)[N]) {
  return items[uniform_below(rng, N)];
}

}  // namespace lagserve::trainer
