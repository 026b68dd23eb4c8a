// The pieces of `lagserve eval` that need no engine: the compression levels
// it sweeps, the exact-match score, and JSONL task files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv/lag_policy.h"

namespace lagserve::cli {

struct EvalPolicy {
  std::string name;      // as given: "off", "4x", "sink=16,lag=128,ratio=0.25"
  kv::LagPolicy policy;  // disabled for "off"
  double compression;    // lag / keep (1 for "off"): the x of the plot
};

// "off"; "Nx" (N >= 1: LagKV with the default sink and lag, keeping 1/N of
// each compressed partition); or a LagKV spec (kv::LagPolicy::parse).
// Errors: InvalidArgument naming the spec.
absl::StatusOr<EvalPolicy> parse_eval_policy(std::string_view spec);

// Whether a generated continuation gives the answer: after leading white
// space it starts with `answer`, and what follows (if anything) is not a
// letter or a digit ("71432." answers 71432; "714321" does not).
bool answer_matches(std::string_view generated, std::string_view answer);

struct EvalItem {
  std::string prompt;
  std::string answer;
};

// A JSONL file of {"prompt": ..., "answer": ...} lines; "completion" (what
// `lagtrain make-data` writes) stands for "answer", white space stripped.
// Errors: an unreadable file, a line that is not such an object, no line.
absl::StatusOr<std::vector<EvalItem>> read_eval_jsonl(const std::string& path);

}  // namespace lagserve::cli
