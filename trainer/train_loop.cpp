// The training loop: data, model, AdamW with warmup and cosine decay,
// gradient accumulation and clipping, evaluation, checkpoints, export.
#include "trainer/train_loop.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "engine/common/status_macros.h"
#include "engine/kv/lag_policy.h"
#include "engine/model/chat_template.h"
#include "engine/model/model.h"
#include "trainer/causal_lm.h"
#include "trainer/checkpoint.h"
#include "trainer/data/example.h"
#include "trainer/data/pack.h"
#include "trainer/data_parallel.h"
#include "trainer/export/hf_export.h"
#include "trainer/progress.h"

namespace lagserve::trainer {

namespace fs = std::filesystem;

namespace {

// One progress message on stderr. NOTE: not spdlog: the LibTorch of PyTorch
// wheels ships its own fmt headers, which the system spdlog cannot use.
template <typename... Args>
void note(fmt::format_string<Args...> format, Args&&... args) {
  fmt::print(stderr, "lagtrain: {}\n", fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace

double lr_at(const TrainOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup) / span);
  const double floor = o.lr * o.min_lr_ratio;
  return floor + (o.lr - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

namespace {

absl::Status check_options(const TrainOptions& o) {
  const auto bad = [](std::string what) { return absl::InvalidArgumentError(std::move(what)); };
  if (o.data.empty()) return bad("--data is required (a JSONL file)");
  if (o.out.empty()) return bad("--out is required (the folder of the exported model)");
  if (o.attention != "lrsa" && o.attention != "full") return bad("--attention must be lrsa or full");
  if (o.seq_len < 2) return bad("--seq-len must be at least 2");
  if (o.batch_size < 1 || o.grad_accum < 1) return bad("--batch-size and --grad-accum must be >= 1");
  if (o.steps < 1) return bad("--steps must be >= 1");
  if (o.warmup < 0 || o.stop_after < 0 || o.eval_every < 0 || o.checkpoint_every < 0) {
    return bad("--warmup, --stop-after, --eval-every and --checkpoint-every must be >= 0");
  }
  if (!(o.lr > 0) || o.min_lr_ratio < 0 || o.min_lr_ratio > 1) {
    return bad("--lr must be > 0 and --min-lr-ratio in [0, 1]");
  }
  if (o.clip < 0 || o.weight_decay < 0) return bad("--clip and --weight-decay must be >= 0");
  if (o.device != "cpu" && o.device != "cuda" && o.device != "auto") {
    return bad("--device must be cpu, cuda or auto");
  }
  if (o.device == "cuda" && !torch::cuda::is_available()) {
    return bad("--device cuda: no CUDA device (or this LibTorch was built without CUDA)");
  }
  if (o.export_dtype != "f32" && o.export_dtype != "bf16") return bad("--export-dtype must be f32 or bf16");
  return absl::OkStatus();
}

struct Batch {
  torch::Tensor tokens;  // [B, T] int64
  torch::Tensor target;  // [B, T] uint8
};

Batch make_batch(const std::vector<PackedSequence>& seqs, const SequenceOrder& order,
                 uint64_t position, int32_t batch_size, torch::Device device) {
  const int64_t T = static_cast<int64_t>(seqs.front().tokens.size());
  auto tokens = torch::empty({batch_size, T}, torch::kLong);
  auto target = torch::empty({batch_size, T}, torch::kUInt8);
  for (int32_t b = 0; b < batch_size; ++b) {
    const PackedSequence& s = seqs[order.at(position + b)];
    std::copy(s.tokens.begin(), s.tokens.end(), tokens.data_ptr<int64_t>() + b * T);
    std::copy(s.target.begin(), s.target.end(), target.data_ptr<uint8_t>() + b * T);
  }
  return {tokens.to(device), target.to(device)};
}

absl::StatusOr<std::vector<PackedSequence>> load_sequences(const std::string& path,
                                                           const model::Model& m,
                                                           const model::ChatTemplate* chat,
                                                           int32_t seq_len) {
  LAGSERVE_ASSIGN_OR_RETURN(std::vector<Example> examples, load_jsonl(path, *m.tokenizer, chat));
  if (examples.empty()) return absl::InvalidArgumentError(fmt::format("{}: no examples", path));
  const int32_t pad = m.tokenizer->eos_id().value_or(0);
  auto seqs = pack_examples(examples, seq_len, pad);
  int64_t n_targets = 0;
  for (const auto& s : seqs) n_targets += std::count(s.target.begin() + 1, s.target.end(), 1);
  if (n_targets == 0) {
    return absl::InvalidArgumentError(fmt::format("{}: no token to train on (no completion?)", path));
  }
  return seqs;
}

// Mean loss and accuracy of the argmax over the target tokens of n batches.
std::pair<double, double> evaluate(CausalLm& lm, const std::vector<PackedSequence>& seqs,
                                   int64_t n_batches, int32_t batch_size, torch::Device device) {
  torch::NoGradGuard no_grad;
  lm.eval();
  const SequenceOrder order(seqs.size(), 0);
  double loss_sum = 0;
  int64_t n_targets = 0, n_right = 0;
  const int64_t n = std::min<int64_t>(n_batches, std::max<size_t>(1, seqs.size() / batch_size));
  for (int64_t i = 0; i < n; ++i) {
    const int32_t b = std::min<int32_t>(batch_size, static_cast<int32_t>(seqs.size()));
    const Batch batch = make_batch(seqs, order, static_cast<uint64_t>(i) * b, b, device);
    const auto logits = lm.forward(batch.tokens);
    const auto [loss, count] = lm_loss(logits, batch.tokens, batch.target);
    const int64_t T = logits.size(1);
    const auto mask = batch.target.narrow(1, 1, T - 1) != 0;
    const auto right = (logits.narrow(1, 0, T - 1).argmax(-1) == batch.tokens.narrow(1, 1, T - 1)) & mask;
    loss_sum += loss.item<double>() * count;
    n_targets += count;
    n_right += right.sum().item<int64_t>();
  }
  lm.train();
  return {loss_sum / std::max<int64_t>(1, n_targets),
          static_cast<double>(n_right) / std::max<int64_t>(1, n_targets)};
}

// The options a resume must share with the run it continues. The number of
// replicas counts (the batch of a step is replicas x batch); it is left out
// at one so that one-process checkpoints keep their fingerprint.
std::string fingerprint(const TrainOptions& o, const kv::LagPolicy& policy, int world) {
  return fmt::format("data={} attention={} lagkv={} seq_len={} batch={} accum={} steps={} seed={}{}",
                     o.data, o.attention, policy.to_string(), o.seq_len, o.batch_size,
                     o.grad_accum, o.steps, o.seed, world > 1 ? fmt::format(" replicas={}", world) : "");
}

}  // namespace

absl::Status run_training(const TrainOptions& o) {
  LAGSERVE_RETURN_IF_ERROR(check_options(o));
  // Replicas (RANK, WORLD_SIZE): each takes its share of every micro-batch;
  // rank 0 alone logs, evaluates, checkpoints and exports.
  const bool cuda = o.device == "cuda" || (o.device == "auto" && torch::cuda::is_available());
  const char* local_rank = std::getenv("LOCAL_RANK");
  const torch::Device device =
      cuda ? torch::Device(torch::kCUDA, local_rank != nullptr ? static_cast<int8_t>(std::atoi(local_rank)) : 0)
           : torch::Device(torch::kCPU);
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<DataParallel> dp, DataParallel::from_env(device));
  const bool lead = dp->rank() == 0;
  torch::set_num_threads(o.threads > 0 ? o.threads
                                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  torch::manual_seed(o.seed);

  std::optional<kv::LagPolicy> spec_policy;
  if (!o.lagkv.empty()) {
    auto p = kv::LagPolicy::parse(o.lagkv);
    if (!p.ok()) return absl::InvalidArgumentError(fmt::format("--lagkv: {}", std::string(p.status().message())));
    spec_policy = *p;
  }
  LAGSERVE_ASSIGN_OR_RETURN(std::string path, model::resolve_model_path(o.model));
  LAGSERVE_ASSIGN_OR_RETURN(std::unique_ptr<model::Model> base, model::load_model(path));
  kv::LagPolicy policy;  // the one trained with (and exported)
  if (o.attention == "lrsa") {
    if (spec_policy) {
      policy = *spec_policy;
    } else {
      LAGSERVE_ASSIGN_OR_RETURN(std::optional<kv::LagPolicy> own, kv::lag_policy_from_model(*base));
      policy = own && own->enabled ? *own : *kv::LagPolicy::parse("on");
    }
    if (!policy.enabled) return absl::InvalidArgumentError("--attention lrsa needs an enabled --lagkv policy");
  }
  std::optional<model::ChatTemplate> chat;
  if (!base->chat_template.empty()) {
    auto t = model::detect_chat_template(base->chat_template, std::nullopt);
    if (t.ok()) chat = *t;
  }
  const model::ChatTemplate* chat_ptr = chat ? &*chat : nullptr;
  LAGSERVE_ASSIGN_OR_RETURN(auto train_seqs, load_sequences(o.data, *base, chat_ptr, o.seq_len));
  std::vector<PackedSequence> eval_seqs;
  if (!o.eval_data.empty()) {
    LAGSERVE_ASSIGN_OR_RETURN(eval_seqs, load_sequences(o.eval_data, *base, chat_ptr, o.seq_len));
  }
  if (lead) {
    note("model {} ({} layers), {} training sequences of {} tokens, attention {} (policy {}), device {}{}",
         path, base->config.n_layers, train_seqs.size(), o.seq_len, o.attention, policy.to_string(),
         cuda ? "cuda" : "cpu", dp->world() > 1 ? fmt::format(", {} replicas ({})", dp->world(), dp->uses_nccl() ? "NCCL" : "Gloo") : "");
  }

  CausalLmOptions lm_opt;
  lm_opt.attention = o.attention == "lrsa" ? AttentionMode::Lrsa : AttentionMode::Full;
  lm_opt.policy = policy;
  lm_opt.checkpoint_activations = o.checkpoint_activations;
  lm_opt.compute_dtype = cuda ? torch::kBFloat16 : torch::kFloat;
  CausalLm lm(base->config, base->weights, lm_opt);
  lm.to(device);
  lm.train();
  base->weights = {};  // the module holds them now

  // Weight decay on matrices only (not on norms and biases).
  std::vector<torch::Tensor> decay, no_decay;
  for (auto& p : lm.parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(
                                 torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(o.weight_decay)));
  groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(
                                    torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(0.0)));
  torch::optim::AdamW optimizer(std::move(groups));

  const std::string ckpt_dir = o.checkpoint_dir.empty() ? (fs::path(o.out) / "checkpoint").string() : o.checkpoint_dir;
  LoopState state;
  state.fingerprint = fingerprint(o, policy, dp->world());
  if (o.resume) {
    LAGSERVE_ASSIGN_OR_RETURN(LoopState saved, load_checkpoint(ckpt_dir, lm, optimizer));
    if (saved.fingerprint != state.fingerprint) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: the checkpoint was made with other options ({}); this run has ({})", ckpt_dir,
          saved.fingerprint, state.fingerprint));
    }
    state = saved;
    if (lead) note("resumed from {} at step {}", ckpt_dir, state.step);
  }
  std::ofstream log;
  if (lead) {
    std::error_code ec;
    fs::create_directories(o.out, ec);
    log.open(fs::path(o.out) / "train_log.jsonl", o.resume ? std::ios::app : std::ios::trunc);
    if (!log) return absl::InvalidArgumentError(fmt::format("{}: cannot write train_log.jsonl", o.out));
  }

  const SequenceOrder order(train_seqs.size(), o.seed);
  const int64_t last = o.stop_after > 0 ? std::min(o.stop_after, o.steps) : o.steps;
  ProgressBar bar(o.steps, o.progress && lead);
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t first = state.step;
  int64_t tokens_this_run = 0;
  double eval_s = 0;  // excluded from the training time and tokens/s
  const auto log_eval = [&] {
    if (eval_seqs.empty() || !lead) return;
    const auto e0 = std::chrono::steady_clock::now();
    const auto [loss, acc] = evaluate(lm, eval_seqs, o.eval_batches, o.batch_size, device);
    eval_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count();
    bar.finish();
    note("step {}: eval loss {:.4f}, token accuracy {:.4f}", state.step, loss, acc);
    log << nlohmann::json{{"step", state.step}, {"eval_loss", loss}, {"eval_accuracy", acc}}.dump() << "\n";
  };
  if (state.step == 0) log_eval();  // the baseline
  while (state.step < last) {
    const double lr = lr_at(o, state.step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    optimizer.zero_grad();
    double loss_sum = 0;
    for (int32_t micro = 0; micro < o.grad_accum; ++micro) {
      // Replica r takes the r-th batch_size sequences of the micro-batch.
      const Batch batch = make_batch(train_seqs, order, state.data_position + dp->rank() * o.batch_size,
                                     o.batch_size, device);
      state.data_position += static_cast<uint64_t>(dp->world()) * o.batch_size;
      const auto [loss, count] = lm_loss(lm.forward(batch.tokens), batch.tokens, batch.target);
      if (dp->world() == 1) {
        (loss / o.grad_accum).backward();
        loss_sum += loss.item<double>();
      } else {
        // This replica's share of the mean over every replica's targets:
        // summed over the replicas (as the gradients are), the loss of one
        // process with the whole micro-batch. One all-reduce gives both the
        // targets of every replica and the sum of their losses.
        const double local = loss.item<double>();
        auto sums = torch::tensor({static_cast<double>(count), local * static_cast<double>(count)},
                                  torch::kDouble);
        LAGSERVE_RETURN_IF_ERROR(dp->all_reduce_sum(sums));
        const double total = sums[0].item<double>();
        (loss * (static_cast<double>(count) / total / o.grad_accum)).backward();
        loss_sum += sums[1].item<double>() / total;
      }
      tokens_this_run += batch.tokens.numel() * dp->world();
    }
    LAGSERVE_RETURN_IF_ERROR(dp->all_reduce_grads(lm.parameters()));
    const double grad_norm = torch::nn::utils::clip_grad_norm_(
        lm.parameters(), o.clip > 0 ? o.clip : std::numeric_limits<double>::infinity());
    optimizer.step();
    ++state.step;

    const double loss = loss_sum / o.grad_accum;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() - eval_s;
    const double tok_s = tokens_this_run / std::max(elapsed, 1e-9);
    if (lead) {
      log << nlohmann::json{{"step", state.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                            {"tokens_per_s", tok_s}, {"elapsed_s", elapsed}}.dump() << "\n";
      log.flush();
    }
    if (!std::isfinite(loss)) {
      bar.finish();
      return absl::InternalError(fmt::format("step {}: the loss is {} (lower --lr?)", state.step, loss));
    }
    if (state.step % std::max<int64_t>(1, o.log_every) == 0 || state.step == last) {
      bar.update(state.step, elapsed, state.step - first,
                 fmt::format("loss {:.4f} lr {:.2e} {:.0f} tok/s", loss, lr, tok_s));
    }
    if (o.eval_every > 0 && state.step % o.eval_every == 0) log_eval();
    if (lead && ((o.checkpoint_every > 0 && state.step % o.checkpoint_every == 0) || state.step == last)) {
      LAGSERVE_RETURN_IF_ERROR(save_checkpoint(ckpt_dir, lm, optimizer, state));
    }
  }
  bar.finish();
  if (state.step < o.steps) {
    if (lead) note("stopped at step {} of {}; continue with --resume", state.step, o.steps);
    return absl::OkStatus();
  }
  if (!lead) return absl::OkStatus();
  if (o.eval_every == 0 || o.steps % o.eval_every != 0) log_eval();
  ExportOptions ex;
  ex.dtype = o.export_dtype == "bf16" ? SaveDtype::BF16 : SaveDtype::F32;
  LAGSERVE_RETURN_IF_ERROR(export_hf(o.out, *base, lm.to_weights(), policy, ex));
  note("exported {} (policy {}); serve it with: lagserve serve --model {}", o.out,
       policy.to_string(), o.out);
  return absl::OkStatus();
}

}  // namespace lagserve::trainer
