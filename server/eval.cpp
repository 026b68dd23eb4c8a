#include "server/eval.h"

#include <cctype>
#include <charconv>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace lagserve::cli {

absl::StatusOr<EvalPolicy> parse_eval_policy(std::string_view spec) {
  EvalPolicy p;
  p.name = std::string(spec);
  if (spec.empty()) return absl::InvalidArgumentError("policy '': write 'off', Nx or a LagKV spec");
  if (spec == "off") {
    p.compression = 1;
    return p;
  }
  std::string lag_spec(spec);
  if (!spec.empty() && (spec.back() == 'x' || spec.back() == 'X')) {
    double n = 0;
    const std::string_view num = spec.substr(0, spec.size() - 1);
    const auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
    if (ec != std::errc() || end != num.data() + num.size() || !(n >= 1)) {
      return absl::InvalidArgumentError(
          fmt::format("policy '{}': write 'off', Nx with N >= 1 (e.g. 4x), or a LagKV spec", spec));
    }
    lag_spec = fmt::format("ratio={}", 1.0 / n);
  }
  auto policy = kv::LagPolicy::parse(lag_spec);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("policy '{}': {}", spec, std::string(policy.status().message())));
  }
  p.policy = *policy;
  p.compression = p.policy.enabled ? static_cast<double>(p.policy.lag) / p.policy.keep : 1;
  return p;
}

bool answer_matches(std::string_view generated, std::string_view answer) {
  size_t i = 0;
  while (i < generated.size() && std::isspace(static_cast<unsigned char>(generated[i]))) ++i;
  const std::string_view rest = generated.substr(i);
  if (answer.empty() || rest.substr(0, answer.size()) != answer) return false;
  return rest.size() == answer.size() || !std::isalnum(static_cast<unsigned char>(rest[answer.size()]));
}

absl::StatusOr<std::vector<EvalItem>> read_eval_jsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(path + ": cannot open");
  std::vector<EvalItem> items;
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    const char* answer_key = j.is_object() && j.contains("answer") ? "answer" : "completion";
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string() || !j.contains(answer_key) ||
        !j[answer_key].is_string()) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: line {}: needs string fields 'prompt' and 'answer' (or 'completion')", path, line));
    }
    EvalItem item{j["prompt"].get<std::string>(), j[answer_key].get<std::string>()};
    const size_t b = item.answer.find_first_not_of(" \t\r\n"), e = item.answer.find_last_not_of(" \t\r\n");
    item.answer = b == std::string::npos ? "" : item.answer.substr(b, e - b + 1);
    if (item.answer.empty()) {
      return absl::InvalidArgumentError(fmt::format("{}: line {}: the answer is empty", path, line));
    }
    items.push_back(std::move(item));
  }
  if (items.empty()) return absl::InvalidArgumentError(path + ": no prompt/answer line");
  return items;
}

}  // namespace lagserve::cli
