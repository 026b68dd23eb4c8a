// Failure path of LAGSERVE_CHECK.
#include "engine/common/check.h"

#include <cstdio>
#include <cstdlib>

namespace lagserve {

void check_failed(const char* file, int line, const char* cond,
                  const std::string& message) {
  std::fprintf(stderr, "lagserve: CHECK failed at %s:%d: %s: %s\n", file, line,
               cond, message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace lagserve
