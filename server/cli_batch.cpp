// `lagserve generate --prompts FILE.jsonl`: every request of the file runs
// concurrently through the scheduler (like vLLM's offline LLM.generate); the
// results are written as JSONL in input order.
//
// Input lines: {"prompt": "..."} | {"messages": [{"role", "content"}, ...]} |
// {"prompt_token_ids": [...]}, with optional "id", "max_tokens", "min_tokens",
// "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids",
// "ignore_eos", "repetition_penalty", "presence_penalty", "frequency_penalty",
// "logprobs", "lagkv" ("off" or "sink=..,lag=..,ratio=..").
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/common/status_macros.h"
#include "engine/runtime/engine.h"
#include "server/cli.h"

namespace lagserve::cli {
namespace {

using nlohmann::json;

template <typename T>
absl::Status read_field(const json& j, const char* key, T& out, int line) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  try {
    out = it->get<T>();
  } catch (const json::exception&) {
    return absl::InvalidArgumentError(
        fmt::format("line {}: field '{}' has the wrong type", line, key));
  }
  return absl::OkStatus();
}

absl::StatusOr<runtime::Request> parse_request(const json& j, int line, const model::Model& m,
                                               const GenerateArgs& args) {
  if (!j.is_object()) return absl::InvalidArgumentError(fmt::format("line {}: not a JSON object", line));
  runtime::Request r = request_from_flags(args);
  r.id = std::to_string(line);
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "id", r.id, line));
  if (j.contains("prompt_token_ids")) {
    LAGSERVE_RETURN_IF_ERROR(read_field(j, "prompt_token_ids", r.prompt, line));
  } else if (j.contains("messages")) {
    std::vector<model::ChatMessage> messages;
    if (!j["messages"].is_array()) {
      return absl::InvalidArgumentError(fmt::format("line {}: 'messages' must be an array", line));
    }
    for (const json& msg : j["messages"]) {
      if (!msg.is_object() || !msg.contains("role") || !msg.contains("content") ||
          !msg["role"].is_string() || !msg["content"].is_string()) {
        return absl::InvalidArgumentError(fmt::format(
            "line {}: each message needs string 'role' and 'content'", line));
      }
      messages.push_back({msg["role"].get<std::string>(), msg["content"].get<std::string>()});
    }
    LAGSERVE_ASSIGN_OR_RETURN(r.prompt, encode_prompt(m, "", &messages, args.chat_template));
  } else if (j.contains("prompt") && j["prompt"].is_string()) {
    LAGSERVE_ASSIGN_OR_RETURN(
        r.prompt, encode_prompt(m, j["prompt"].get<std::string>(), nullptr, std::nullopt));
  } else {
    return absl::InvalidArgumentError(fmt::format(
        "line {}: needs 'prompt' (string), 'messages' or 'prompt_token_ids'", line));
  }
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "max_tokens", r.stop.max_tokens, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "min_tokens", r.stop.min_tokens, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "stop", r.stop.stop, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "stop_token_ids", r.stop.stop_token_ids, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "ignore_eos", r.stop.ignore_eos, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "temperature", r.sampling.temperature, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "top_p", r.sampling.top_p, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "top_k", r.sampling.top_k, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "min_p", r.sampling.min_p, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "repetition_penalty", r.sampling.repetition_penalty, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "presence_penalty", r.sampling.presence_penalty, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "frequency_penalty", r.sampling.frequency_penalty, line));
  LAGSERVE_RETURN_IF_ERROR(read_field(j, "logprobs", r.sampling.logprobs, line));
  if (j.contains("seed") && !j["seed"].is_null()) {
    uint64_t seed = 0;
    LAGSERVE_RETURN_IF_ERROR(read_field(j, "seed", seed, line));
    r.sampling.seed = seed;
  }
  if (j.contains("lagkv")) {
    std::string spec;
    LAGSERVE_RETURN_IF_ERROR(read_field(j, "lagkv", spec, line));
    auto policy = kv::LagPolicy::parse(spec);
    if (!policy.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("line {}: lagkv: {}", line, std::string(policy.status().message())));
    }
    r.lagkv = *policy;
  }
  return r;
}

const char* finish_name(runtime::FinishReason f) {
  switch (f) {
    case runtime::FinishReason::Stop: return "stop";
    case runtime::FinishReason::Length: return "length";
    case runtime::FinishReason::Abort: return "abort";
    case runtime::FinishReason::None: break;
  }
  return "none";
}

}  // namespace

int run_batch(const GenerateArgs& args) {
  std::ifstream in(args.prompts_file);
  if (!in) return fail(absl::NotFoundError(args.prompts_file + ": cannot open"));
  auto parts = make_engine_parts(args.engine);
  if (!parts.ok()) return fail(parts.status());
  const model::Model& m = *parts->model;

  std::ofstream trace;
  if (absl::Status st = open_eviction_trace(args.trace_evictions, trace, parts->config); !st.ok()) {
    return fail(st);
  }
  runtime::Engine engine(*parts->backend, *m.tokenizer, parts->config);

  struct Result {
    std::string id;
    json out;
    std::vector<int32_t> tokens;
    std::string text;
    int32_t n_prompt = 0;
    json logprobs = json::array();  // per generated token, when asked for
  };
  std::vector<Result> results;
  std::map<std::string, size_t> index;
  std::string line_text;
  int line = 0;
  int64_t n_prompt_tokens = 0;
  while (std::getline(in, line_text)) {
    ++line;
    if (line_text.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line_text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return fail(absl::InvalidArgumentError(
          fmt::format("{}: line {}: not valid JSON", args.prompts_file, line)));
    }
    auto req = parse_request(j, line, m, args);
    if (!req.ok()) return fail(absl::InvalidArgumentError(
        fmt::format("{}: {}", args.prompts_file, std::string(req.status().message()))));
    if (index.count(req->id)) {
      return fail(absl::InvalidArgumentError(
          fmt::format("{}: line {}: duplicate id '{}'", args.prompts_file, line, req->id)));
    }
    index[req->id] = results.size();
    results.push_back({req->id, json::object(), {}, {}, static_cast<int32_t>(req->prompt.size()),
                       json::array()});
    n_prompt_tokens += static_cast<int64_t>(req->prompt.size());
    const std::string id = req->id;
    if (absl::Status s = engine.add_request(std::move(*req)); !s.ok()) {
      return fail(absl::InvalidArgumentError(fmt::format(
          "{}: line {} (id '{}'): {}", args.prompts_file, line, id, std::string(s.message()))));
    }
  }

  const auto t0 = std::chrono::steady_clock::now();
  int64_t n_generated = 0;
  while (engine.has_work()) {
    auto outs = engine.step();
    if (!outs.ok()) return fail(outs.status());
    for (runtime::RequestOutput& o : *outs) {
      Result& r = results[index.at(o.id)];
      r.text += o.text;
      r.tokens.insert(r.tokens.end(), o.tokens.begin(), o.tokens.end());
      for (const runtime::SampleResult& lp : o.logprobs) {
        json top = json::array();
        for (const runtime::TokenLogprob& t : lp.top) top.push_back({{"token", t.token}, {"logprob", t.logprob}});
        r.logprobs.push_back({{"token", lp.token}, {"logprob", lp.logprob}, {"top_logprobs", top}});
      }
      n_generated += static_cast<int64_t>(o.tokens.size());
      if (o.finished()) {
        r.out = json{{"id", r.id},
                     {"text", r.text},
                     {"token_ids", r.tokens},
                     {"finish_reason", finish_name(o.finish)},
                     {"stop_reason", o.stop_reason ? json(*o.stop_reason) : json(nullptr)},
                     {"usage", {{"prompt_tokens", r.n_prompt},
                                {"completion_tokens", static_cast<int>(r.tokens.size())}}},
                     {"num_preemptions", o.n_preemptions}};
        if (!r.logprobs.empty()) r.out["logprobs"] = r.logprobs;
        if (!o.error.empty()) r.out["error"] = o.error;
      }
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::ofstream file;
  std::ostream* out = &std::cout;
  if (!args.output_file.empty()) {
    file.open(args.output_file);
    if (!file) return fail(absl::InvalidArgumentError("cannot write " + args.output_file));
    out = &file;
  }
  for (const Result& r : results) *out << r.out.dump() << "\n";
  const runtime::EngineStats st = engine.stats();
  fmt::print(stderr,
             "batch: {} requests, {} prompt + {} generated tokens in {:.2f} s: {:.1f} generated "
             "tok/s, {:.1f} total tok/s; peak KV blocks {} of {}; {} preemptions; KV policy {}\n",
             results.size(), n_prompt_tokens, n_generated, secs, n_generated / secs,
             (n_prompt_tokens + n_generated) / secs, st.peak_blocks_used, st.blocks_total,
             st.n_preemptions, parts->config.default_policy.to_string());
  return 0;
}

}  // namespace lagserve::cli
