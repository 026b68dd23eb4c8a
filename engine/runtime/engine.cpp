// Engine::step: schedule, build the StepBatch, run the backend, advance the
// caches (compaction included), sample, stream, finish.
#include "engine/runtime/engine.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "engine/common/check.h"
#include "engine/common/status_macros.h"

namespace lagserve::runtime {
namespace {

SchedulerConfig scheduler_config(const EngineConfig& c, const backend::Backend& b) {
  SchedulerConfig s;
  s.max_batched_tokens = c.max_batched_tokens;
  s.max_seqs = c.max_seqs;
  s.n_layers = b.config().n_layers;
  s.block_size = b.block_size();
  return s;
}

// splitmix64: decorrelates the fallback seeds of consecutive requests.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Tokens the compressed group has dropped so far (0 without one).
int64_t evicted_tokens(const kv::SequenceCache& c) {
  return c.has_compressed() ? c.logical_len() - c.compressed().cache_len() : 0;
}

// One sequence's device-sampling inputs (backend::DeviceSampling points into
// these vectors), built from what Sampler::sample would read.
struct DeviceSamplingInputs {
  backend::DeviceSampling d;
  std::vector<int32_t> output_ids, output_counts, bias_ids, banned;
  std::vector<float> bias_values;

  const backend::DeviceSampling& prepare(Sequence& seq) {
    const SamplingParams& p = seq.request.sampling;
    d.temperature = p.temperature;
    d.top_k = p.top_k;
    d.top_p = p.top_p;
    d.min_p = p.min_p;
    d.repetition_penalty = p.repetition_penalty;
    d.presence_penalty = p.presence_penalty;
    d.frequency_penalty = p.frequency_penalty;
    // float(u) may round up to 1; the draw needs u < 1.
    d.u = std::min(static_cast<float>(seq.sampler->next_uniform()), std::nextafter(1.0f, 0.0f));
    if (p.repetition_penalty != 1.0f) d.prompt_tokens = seq.prompt_tokens();
    if (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
      std::vector<int32_t> sorted(seq.output_tokens().begin(), seq.output_tokens().end());
      std::sort(sorted.begin(), sorted.end());
      for (size_t i = 0; i < sorted.size();) {
        size_t j = i;
        while (j < sorted.size() && sorted[j] == sorted[i]) ++j;
        output_ids.push_back(sorted[i]);
        output_counts.push_back(static_cast<int32_t>(j - i));
        i = j;
      }
      d.output_ids = output_ids;
      d.output_counts = output_counts;
    }
    for (const auto& [id, bias] : p.logit_bias) {
      bias_ids.push_back(id);
      bias_values.push_back(bias);
    }
    d.bias_ids = bias_ids;
    d.bias_values = bias_values;
    banned = seq.stream->banned_ids();
    d.banned = banned;
    return d;
  }
};

}  // namespace

Engine::Engine(backend::Backend& backend, const model::Tokenizer& tokenizer, EngineConfig config)
    : backend_(backend),
      tokenizer_(tokenizer),
      config_(std::move(config)),
      pool_(backend.n_blocks()),
      scheduler_(scheduler_config(config_, backend)) {}

Engine::~Engine() {
  for (auto& [id, seq] : sequences_) seq->cache.release(pool_);
}

absl::Status Engine::validate(const Request& r) const {
  const auto& cfg = backend_.config();
  if (r.prompt.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  for (int32_t t : r.prompt) {
    if (t < 0 || t >= cfg.vocab_size) {
      return absl::InvalidArgumentError(
          fmt::format("prompt token id {} is outside the vocabulary [0, {})", t, cfg.vocab_size));
    }
  }
  if (r.stop.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  if (r.stop.min_tokens < 0 || r.stop.min_tokens > r.stop.max_tokens) {
    return absl::InvalidArgumentError("min_tokens must be between 0 and max_tokens");
  }
  const int64_t total = static_cast<int64_t>(r.prompt.size()) + r.stop.max_tokens;
  if (total > cfg.max_positions) {
    return absl::InvalidArgumentError(fmt::format(
        "prompt ({} tokens) plus max_tokens ({}) exceeds the model's context of {} tokens",
        r.prompt.size(), r.stop.max_tokens, cfg.max_positions));
  }
  LAGSERVE_RETURN_IF_ERROR(runtime::validate(r.sampling, cfg.vocab_size));
  LAGSERVE_RETURN_IF_ERROR(runtime::validate(r.stop, cfg.vocab_size));
  const kv::LagPolicy& policy = r.lagkv ? *r.lagkv : config_.default_policy;
  const int32_t need = kv::SequenceCache::blocks_for(policy, cfg.n_layers, backend_.block_size(),
                                                     static_cast<int32_t>(total));
  if (need > pool_.n_blocks() - 1) {
    return absl::InvalidArgumentError(fmt::format(
        "the request needs {} KV blocks (prompt + max_tokens) but the cache has {}", need,
        pool_.n_blocks() - 1));
  }
  return absl::OkStatus();
}

absl::Status Engine::add_request(Request request) {
  LAGSERVE_RETURN_IF_ERROR(validate(request));
  if (sequences_.count(request.id)) {
    return absl::AlreadyExistsError(fmt::format("request id '{}' is already running", request.id));
  }
  const kv::LagPolicy policy = request.lagkv ? *request.lagkv : config_.default_policy;
  const uint64_t arrival = next_arrival_++;
  auto sampler = std::make_unique<Sampler>(request.sampling, mix(config_.seed ^ mix(arrival)));
  std::vector<int32_t> eos = tokenizer_.stop_ids();
  auto stream = std::make_unique<OutputStream>(tokenizer_, request.stop, std::move(eos));
  const std::string id = request.id;
  auto seq = std::make_unique<Sequence>(
      std::move(request), arrival,
      kv::SequenceCache(policy, backend_.config().n_layers, backend_.block_size()),
      std::move(sampler), std::move(stream));
  scheduler_.add(seq.get());
  sequences_.emplace(id, std::move(seq));
  return absl::OkStatus();
}

void Engine::abort_request(const std::string& id) { aborted_.push_back(id); }

void Engine::finish(Sequence& seq, RequestOutput& out, FinishReason reason) {
  out.finish = reason;
  seq.status = SeqStatus::Finished;
  seq.cache.release(pool_);
  scheduler_.remove(&seq);
}

absl::StatusOr<std::vector<RequestOutput>> Engine::step() {
  std::vector<RequestOutput> outputs;
  for (const std::string& id : aborted_) {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) continue;
    RequestOutput out;
    out.id = id;
    out.n_prompt = it->second->n_prompt();
    out.n_output = it->second->n_output();
    finish(*it->second, out, FinishReason::Abort);
    outputs.push_back(std::move(out));
    sequences_.erase(it);
  }
  aborted_.clear();

  StepPlan plan = scheduler_.schedule(pool_);
  stats_.n_preemptions += static_cast<int64_t>(plan.preempted.size());
  if (plan.empty()) return outputs;
  ++stats_.n_steps;
  stats_.peak_blocks_used = std::max(stats_.peak_blocks_used, pool_.n_used());

  backend::StepBatch batch;
  batch.seqs.reserve(plan.seqs.size());
  // Sequences that sample this step and want no logprobs sample on the device
  // when the backend can; `device` holds their inputs through the step.
  std::vector<DeviceSamplingInputs> device(backend_.samples_on_device() ? plan.seqs.size() : 0);
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    Sequence& seq = *plan.seqs[i].seq;
    const int32_t n_tokens = plan.seqs[i].n_tokens;
    if (seq.queue_seconds < 0) {
      seq.queue_seconds = std::chrono::duration<double>(now - seq.added_at).count();
    }
    backend::SequenceStep step = backend::SequenceStep::from_cache(
        seq.cache, std::span<const int32_t>(seq.tokens).subspan(seq.n_computed(), n_tokens),
        /*all_logits=*/false, /*trace_evictions=*/static_cast<bool>(config_.on_eviction));
    const bool samples = seq.n_pending() == n_tokens;
    step.need_logits = samples;
    if (samples && !device.empty() && seq.request.sampling.logprobs < 0) {
      step.sampling = &device[i].prepare(seq);
      step.need_logits = false;
    }
    batch.seqs.push_back(step);
  }
  LAGSERVE_ASSIGN_OR_RETURN(backend::StepOutput result, backend_.step(batch));
  for (const backend::EvictionRecord& e : result.evictions) {
    config_.on_eviction(plan.seqs[e.seq].seq->request.id, e);
  }

  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    Sequence& seq = *plan.seqs[i].seq;
    const int64_t evicted_before = evicted_tokens(seq.cache);
    seq.cache.advance(pool_, plan.seqs[i].n_tokens);
    stats_.kv_tokens_evicted += evicted_tokens(seq.cache) - evicted_before;
    if (seq.n_pending() > 0) continue;  // mid-prompt (or mid-recompute): nothing to sample yet
    SampleResult sample{};
    if (batch.seqs[i].sampling != nullptr) {
      LAGSERVE_CHECK(i < result.tokens.size() && result.tokens[i] >= 0,
                     "the backend sampled no token for sequence {}", i);
      sample.token = result.tokens[i];
    } else {
      sample = seq.sampler->sample(result.last_row(static_cast<int32_t>(i)), seq.prompt_tokens(),
                                   seq.output_tokens(), seq.stream->banned_ids());
    }
    seq.tokens.push_back(sample.token);
    OutputStream::Update update = seq.stream->push(sample.token);
    RequestOutput out;
    out.id = seq.request.id;
    out.text = std::move(update.text);
    out.tokens.push_back(sample.token);
    if (seq.request.sampling.logprobs >= 0) out.logprobs.push_back(sample);
    out.n_prompt = seq.n_prompt();
    out.n_output = seq.n_output();
    out.n_preemptions = seq.n_preemptions;
    out.queue_seconds = seq.queue_seconds;
    if (update.finish != FinishReason::None) {
      if (update.matched_stop) {
        out.stop_reason = *update.matched_stop;
      } else if (update.stop_token) {
        out.stop_reason = tokenizer_.token_text(*update.stop_token);
        out.stop_token = *update.stop_token;
      }
      out.text += seq.stream->finish_text();
      finish(seq, out, update.finish);
    }
    outputs.push_back(std::move(out));
  }
  for (auto it = sequences_.begin(); it != sequences_.end();) {
    it = it->second->status == SeqStatus::Finished ? sequences_.erase(it) : std::next(it);
  }
  return outputs;
}

EngineStats Engine::stats() const {
  EngineStats s = stats_;
  s.n_running = scheduler_.n_running();
  s.n_waiting = scheduler_.n_waiting();
  s.blocks_used = pool_.n_used();
  s.blocks_total = pool_.n_blocks() - 1;
  for (const auto& [id, seq] : sequences_) {
    const kv::SequenceCache& c = seq->cache;
    s.kv_tokens_logical += c.logical_len();
    s.kv_tokens_retained += c.has_compressed() ? c.compressed().cache_len() : c.full().cache_len();
  }
  return s;
}

}  // namespace lagserve::runtime
