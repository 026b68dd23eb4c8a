// LAGSERVE_CHECK: the one way to state an invariant. A broken invariant is a
// bug: it logs file, line and a formatted message, then aborts. Expected
// failures (bad files, bad requests) are absl::Status values instead.
#pragma once

#include <fmt/format.h>

#include <string>

namespace lagserve {

[[noreturn]] void check_failed(const char* file, int line, const char* cond,
                               const std::string& message);

}  // namespace lagserve

#define LAGSERVE_CHECK(cond, ...)                                             \
  do {                                                                        \
    if (!(cond)) [[unlikely]] {                                               \
      ::lagserve::check_failed(__FILE__, __LINE__, #cond,                     \
                               ::fmt::format(__VA_ARGS__));                   \
    }                                                                         \
  } while (0)
