// The API key check both front ends use: a compare whose time does not say
// where a wrong key first differs.
#pragma once

#include <cstddef>
#include <string_view>

namespace lagserve::server {

// True when given == expected. Every byte of `expected` is looked at, whatever
// `given` is; only the length of the expected key can leak.
inline bool constant_time_equal(std::string_view given, std::string_view expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  }
  return diff == 0;
}

}  // namespace lagserve::server
