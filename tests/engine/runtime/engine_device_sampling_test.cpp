// The engine's device-sampling path (Backend::samples_on_device) on any
// machine: a backend that wraps the CPU backend and samples the rows the
// engine hands it, from the DeviceSampling fields alone, with the documented
// semantics of the GPU kernel (runtime::sampler_process_logits, then the
// smallest id whose cumulative mass exceeds u times the total). The engine on
// it must give every request exactly what the engine with host sampling
// gives: that holds only if the engine passes the right parameters, penalty
// counts, bias, bans (min_tokens) and the uniform from the request's own
// seeded generator, and keeps the host path for logprobs requests.
#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "engine/backend/cpu/cpu_backend.h"
#include "engine/model/model.h"
#include "engine/runtime/engine.h"
#include "engine/runtime/sampler.h"

namespace lagserve::runtime {
namespace {

namespace fs = std::filesystem;

class HostDeviceSampling final : public backend::Backend {
 public:
  explicit HostDeviceSampling(std::unique_ptr<backend::Backend> inner) : inner_(std::move(inner)) {}
  const model::ModelConfig& config() const override { return inner_->config(); }
  int32_t block_size() const override { return inner_->block_size(); }
  int32_t n_blocks() const override { return inner_->n_blocks(); }
  bool samples_on_device() const override { return true; }

  absl::StatusOr<backend::StepOutput> step(const backend::StepBatch& batch) override {
    auto out = inner_->step(batch);
    if (!out.ok()) return out;
    bool any = false;
    for (const auto& s : batch.seqs) any = any || s.sampling != nullptr;
    if (!any) return out;
    out->tokens.assign(batch.seqs.size(), -1);
    for (size_t i = 0; i < batch.seqs.size(); ++i) {
      const backend::DeviceSampling* d = batch.seqs[i].sampling;
      if (d == nullptr) continue;
      ++sampled_;
      out->tokens[i] = sample(*d, out->last_row(static_cast<int32_t>(i)));
    }
    return out;
  }

  int sampled() const { return sampled_; }

 private:
  static int32_t sample(const backend::DeviceSampling& d, std::span<const float> logits) {
    SamplingParams p;
    p.temperature = d.temperature;
    p.top_k = d.top_k;
    p.top_p = d.top_p;
    p.min_p = d.min_p;
    p.repetition_penalty = d.repetition_penalty;
    p.presence_penalty = d.presence_penalty;
    p.frequency_penalty = d.frequency_penalty;
    EXPECT_EQ(d.bias_ids.size(), d.bias_values.size());
    for (size_t j = 0; j < d.bias_ids.size(); ++j) p.logit_bias.emplace_back(d.bias_ids[j], d.bias_values[j]);
    EXPECT_EQ(d.output_ids.size(), d.output_counts.size());
    std::vector<int32_t> output;  // order does not matter to the penalties
    for (size_t j = 0; j < d.output_ids.size(); ++j) output.insert(output.end(), d.output_counts[j], d.output_ids[j]);
    const std::vector<float> x = sampler_process_logits(logits, p, d.prompt_tokens, output, d.banned);
    const auto top = std::max_element(x.begin(), x.end());
    if (d.temperature < 1e-5f) return static_cast<int32_t>(top - x.begin());
    EXPECT_GE(d.u, 0.f);
    EXPECT_LT(d.u, 1.f);
    double z = 0;
    for (float v : x) z += std::exp(static_cast<double>(v) - *top);
    double acc = 0;
    int32_t last = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      if (x[i] == -INFINITY) continue;
      acc += std::exp(static_cast<double>(x[i]) - *top);
      last = static_cast<int32_t>(i);
      if (static_cast<double>(d.u) * z < acc) return last;
    }
    return last;
  }

  std::unique_ptr<backend::Backend> inner_;
  int sampled_ = 0;
};

std::vector<Request> requests(const model::Model& m) {
  const int32_t vocab = m.config.vocab_size;
  std::mt19937 rng(7);
  std::vector<Request> reqs;
  for (int i = 0; i < 10; ++i) {
    Request r;
    r.id = "s";
    r.id += std::to_string(i);
    const int len = 4 + static_cast<int>(rng() % 40);
    for (int t = 0; t < len; ++t) r.prompt.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    SamplingParams& p = r.sampling;
    p.seed = 100 + i;
    switch (i % 5) {
      case 0: p.temperature = 0; break;
      case 1: p.temperature = 0.9f, p.top_k = 12; break;
      case 2: p.temperature = 1.2f, p.top_p = 0.8f, p.min_p = 0.02f; break;
      case 3:
        p.temperature = 0.7f, p.repetition_penalty = 1.4f, p.presence_penalty = 0.6f;
        p.frequency_penalty = 0.4f, p.logit_bias = {{4, 2.5f}, {9, -1.f}};
        break;
      default: p.temperature = 1.0f, p.logprobs = 2; break;  // the host path
    }
    r.stop.max_tokens = 12 + static_cast<int>(rng() % 12);
    r.stop.min_tokens = i % 2 == 0 ? 6 : 0;  // bans EOS and the stop ids until then
    r.stop.stop_token_ids = {5, 6};
    reqs.push_back(std::move(r));
  }
  return reqs;
}

std::map<std::string, std::vector<int32_t>> run(backend::Backend& be, const model::Model& m,
                                                const std::vector<Request>& reqs) {
  Engine engine(be, *m.tokenizer, {});
  for (const Request& r : reqs) EXPECT_TRUE(engine.add_request(r).ok());
  std::map<std::string, std::vector<int32_t>> out;
  while (engine.has_work()) {
    auto outs = engine.step();
    EXPECT_TRUE(outs.ok()) << outs.status();
    if (!outs.ok()) break;
    for (const RequestOutput& o : *outs) out[o.id].insert(out[o.id].end(), o.tokens.begin(), o.tokens.end());
  }
  return out;
}

TEST(EngineDeviceSampling, GivesWhatHostSamplingGives) {
  auto m = model::load_model((fs::path(LAGSERVE_SOURCE_DIR) / "tests/golden/models/tiny-qwen2").string());
  ASSERT_TRUE(m.ok()) << m.status();
  backend::CpuBackendOptions opt;
  opt.kv_cache_bytes = 16 << 20;
  auto host = backend::make_cpu_backend(**m, opt);
  auto inner = backend::make_cpu_backend(**m, opt);
  ASSERT_TRUE(host.ok() && inner.ok());
  HostDeviceSampling device(std::move(*inner));
  const std::vector<Request> reqs = requests(**m);
  const auto want = run(**host, **m, reqs);
  const auto got = run(device, **m, reqs);
  // Every request but the logprobs ones sampled through the backend, once per token.
  int device_tokens = 0;
  for (const Request& r : reqs) {
    SCOPED_TRACE(r.id);
    ASSERT_EQ(got.count(r.id), 1u);
    EXPECT_EQ(got.at(r.id), want.at(r.id));
    if (r.sampling.logprobs < 0) device_tokens += static_cast<int>(got.at(r.id).size());
  }
  EXPECT_EQ(device.sampled(), device_tokens);
  EXPECT_GT(device_tokens, 50);
}

}  // namespace
}  // namespace lagserve::runtime
