// `lagserve generate --prompt`: one request through the engine, streamed.
#include <chrono>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "engine/runtime/engine.h"
#include "server/cli.h"

namespace lagserve::cli {

int run_generate(const GenerateArgs& args) {
  auto parts = make_engine_parts(args.engine);
  if (!parts.ok()) return fail(parts.status());
  const model::Model& m = *parts->model;

  std::vector<model::ChatMessage> messages;
  if (!args.system.empty()) messages.push_back({"system", args.system});
  messages.push_back({"user", args.prompt});
  auto prompt = encode_prompt(m, args.prompt, args.chat ? &messages : nullptr, args.chat_template);
  if (!prompt.ok()) return fail(prompt.status());

  std::ofstream trace;
  if (absl::Status st = open_eviction_trace(args.trace_evictions, trace, parts->config); !st.ok()) {
    return fail(st);
  }
  runtime::Engine engine(*parts->backend, *m.tokenizer, parts->config);
  runtime::Request req = request_from_flags(args);
  req.id = "0";
  req.prompt = std::move(*prompt);
  req.sampling.seed = args.seed;
  if (absl::Status s = engine.add_request(std::move(req)); !s.ok()) return fail(s);

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  clock::time_point t_first;
  int n_out = 0;
  int32_t n_prompt = 0;
  while (engine.has_work()) {
    auto outs = engine.step();
    if (!outs.ok()) return fail(outs.status());
    for (const runtime::RequestOutput& o : *outs) {
      if (n_out == 0 && !o.tokens.empty()) t_first = clock::now();
      n_out = o.n_output;
      n_prompt = o.n_prompt;
      std::fwrite(o.text.data(), 1, o.text.size(), stdout);
      std::fflush(stdout);
      if (o.finish == runtime::FinishReason::Abort) {
        return fail(absl::InternalError(o.error.empty() ? "request aborted" : o.error));
      }
    }
  }
  std::fputc('\n', stdout);
  std::fflush(stdout);  // before the stats line on stderr
  const double prefill_s = std::chrono::duration<double>(t_first - t0).count();
  const double decode_s = std::chrono::duration<double>(clock::now() - t_first).count();
  const int n_decoded = std::max(0, n_out - 1);
  fmt::print(stderr,
             "prompt: {} tokens in {:.3f} s ({:.1f} tok/s); decode: {} tokens in {:.3f} s "
             "({:.1f} tok/s); {}; KV policy {}\n",
             n_prompt, prefill_s, n_prompt / std::max(prefill_s, 1e-9), n_decoded, decode_s,
             n_decoded / std::max(decode_s, 1e-9),
             parts->device == "cuda" ? std::string("cuda") : fmt::format("cpu, {} threads", parts->n_threads),
             parts->config.default_policy.to_string());
  return 0;
}

}  // namespace lagserve::cli
