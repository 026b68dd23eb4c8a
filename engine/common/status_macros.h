// Small helpers for absl::Status plumbing.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LAGSERVE_CONCAT_INNER(a, b) a##b
#define LAGSERVE_CONCAT(a, b) LAGSERVE_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define LAGSERVE_RETURN_IF_ERROR(expr)            \
  do {                                            \
    ::absl::Status _st = (expr);                  \
    if (!_st.ok()) return _st;                    \
  } while (0)

// `LAGSERVE_ASSIGN_OR_RETURN(auto x, f());` unwraps an absl::StatusOr or
// returns its error.
#define LAGSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  LAGSERVE_ASSIGN_OR_RETURN_IMPL(LAGSERVE_CONCAT(_statusor_, __LINE__), lhs, expr)
#define LAGSERVE_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()
