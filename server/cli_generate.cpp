// `lagserve generate`: load, optionally apply the chat template, stream text.
#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/kv/block_pool.h"
#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "engine/runtime/generator.h"
#include "server/cli.h"

namespace lagserve::cli {
namespace {

int fail(const absl::Status& s) {
  fmt::print(stderr, "lagserve: error: {}\n", std::string(s.message()));
  return 1;
}

}  // namespace

int run_generate(const GenerateArgs& args) {
  auto model = model::load_model(args.model);
  if (!model.ok()) return fail(model.status());
  const model::Model& m = **model;

  std::string text = args.prompt;
  bool add_bos = m.tokenizer->add_bos_default();
  if (args.chat) {
    std::optional<model::ChatFormat> fmt_override;
    if (args.chat_template) {
      auto f = model::parse_chat_format(*args.chat_template);
      if (!f.ok()) return fail(f.status());
      fmt_override = *f;
    }
    auto tmpl = model::detect_chat_template(m.chat_template, fmt_override);
    if (!tmpl.ok()) return fail(tmpl.status());
    std::vector<model::ChatMessage> messages;
    if (!args.system.empty()) messages.push_back({"system", args.system});
    messages.push_back({"user", args.prompt});
    text = tmpl->render(messages, /*add_generation_prompt=*/true);
    if (!tmpl->bos_text.empty()) add_bos = false;  // the template wrote BOS itself
  }
  const std::vector<int32_t> prompt = m.tokenizer->encode(text, add_bos);

  backend::CpuBackendOptions opt;
  opt.n_threads = args.threads > 0 ? args.threads
                                   : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  opt.kv_cache_bytes = static_cast<int64_t>(args.kv_cache_mb) << 20;
  auto be = backend::make_cpu_backend(m, opt);
  if (!be.ok()) return fail(be.status());
  kv::BlockPool pool((*be)->n_blocks());

  runtime::GenerateParams params;
  params.sampling.temperature = args.temperature;
  params.sampling.seed = args.seed;
  params.max_tokens = args.max_tokens;
  if (!args.ignore_eos) params.stop_ids = m.tokenizer->stop_ids();

  model::StreamDecoder decoder(*m.tokenizer);
  auto result = runtime::generate(**be, pool, prompt, params, [&](int32_t id) {
    if (!m.tokenizer->is_special(id)) {
      const std::string piece = decoder.push(id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (!result.ok()) return fail(result.status());
  const std::string rest = decoder.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  const auto& r = *result;
  const int n_decoded = std::max<int>(0, static_cast<int>(r.tokens.size()) - 1);
  fmt::print(stderr, "prompt: {} tokens in {:.3f} s ({:.1f} tok/s); decode: {} tokens in {:.3f} s ({:.1f} tok/s); {} threads\n",
             r.n_prompt, r.prefill_seconds, r.n_prompt / std::max(r.prefill_seconds, 1e-9),
             n_decoded, r.decode_seconds, n_decoded / std::max(r.decode_seconds, 1e-9),
             opt.n_threads);
  return 0;
}

}  // namespace lagserve::cli
