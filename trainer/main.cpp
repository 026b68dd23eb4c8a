// The lagtrain binary: `train` (LRSA fine-tuning, then a Hugging Face export
// that lagserve serves under the same policy) and `make-data` (synthetic
// long-context tasks as JSONL).
#include <execinfo.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include "engine/model/model.h"
#include "trainer/data/tasks.h"
#include "trainer/train_loop.h"

namespace {

using lagserve::trainer::TrainOptions;

// A crash prints where it happened (function names need -rdynamic, which the
// build adds) before the default action ends the process.
void on_fatal_signal(int sig) {
  static const char kHead[] = "lagtrain: fatal signal; backtrace:\n";
  (void)!write(STDERR_FILENO, kHead, sizeof kHead - 1);
  void* frames[64];
  backtrace_symbols_fd(frames, backtrace(frames, 64), STDERR_FILENO);
  signal(sig, SIG_DFL);
  raise(sig);
}

void add_train_options(CLI::App* t, TrainOptions& o) {
  t->add_option("--model,-m", o.model, "GGUF file, Hugging Face folder, or 'default'")->capture_default_str();
  t->add_option("--data", o.data, "Training JSONL: {\"text\"}, {\"prompt\",\"completion\"} or {\"messages\"}")
      ->required();
  t->add_option("--eval-data", o.eval_data, "Evaluation JSONL (same shapes)");
  t->add_option("--out,-o", o.out, "Folder of the exported model (Hugging Face layout)")->required();
  t->add_option("--checkpoint-dir", o.checkpoint_dir, "Checkpoint folder (default: OUT/checkpoint)");
  t->add_flag("--resume", o.resume, "Continue from the checkpoint folder");
  t->add_option("--attention", o.attention, "lrsa (the LagKV mask) or full")
      ->capture_default_str()->check(CLI::IsMember({"lrsa", "full"}));
  t->add_option("--lagkv", o.lagkv,
                "Policy to train with, e.g. 'sink=16,lag=128,ratio=0.25' (default: the model's, else 'on')");
  t->add_option("--seq-len", o.seq_len, "Tokens per training sequence")->capture_default_str();
  t->add_option("--batch-size", o.batch_size, "Sequences per micro-batch")->capture_default_str();
  t->add_option("--grad-accum", o.grad_accum, "Micro-batches per optimizer step")->capture_default_str();
  t->add_option("--steps", o.steps, "Optimizer steps")->capture_default_str();
  t->add_option("--warmup", o.warmup, "Linear warmup steps")->capture_default_str();
  t->add_option("--stop-after", o.stop_after, "Stop (with a checkpoint) after this step; resume later")
      ->capture_default_str();
  t->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  t->add_option("--min-lr-ratio", o.min_lr_ratio, "Cosine floor as a fraction of --lr")->capture_default_str();
  t->add_option("--weight-decay", o.weight_decay, "AdamW weight decay (matrices only)")->capture_default_str();
  t->add_option("--clip", o.clip, "Gradient norm clip (0: off)")->capture_default_str();
  t->add_option("--seed", o.seed, "Seed of the data order")->capture_default_str();
  t->add_option("--eval-every", o.eval_every, "Evaluate every N steps (0: at the end)")->capture_default_str();
  t->add_option("--eval-batches", o.eval_batches, "Batches per evaluation")->capture_default_str();
  t->add_option("--checkpoint-every", o.checkpoint_every, "Checkpoint every N steps (0: at the end)")
      ->capture_default_str();
  t->add_option("--log-every", o.log_every, "Progress update every N steps")->capture_default_str();
  t->add_flag("--activation-checkpointing", o.checkpoint_activations,
              "Recompute each layer in the backward pass (less memory)");
  t->add_option("--device", o.device, "cpu, cuda or auto")->capture_default_str()
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  t->add_option("--threads", o.threads, "CPU threads (0: all)")->capture_default_str();
  t->add_option("--export-dtype", o.export_dtype, "f32 or bf16")->capture_default_str()
      ->check(CLI::IsMember({"f32", "bf16"}));
  t->add_flag("!--no-progress", o.progress, "No progress bar");
}

}  // namespace

int main(int argc, char** argv) {
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) signal(sig, on_fatal_signal);
  CLI::App app{"lagtrain: LRSA fine-tuning for LagKV-compressed serving"};
  app.require_subcommand(1);

  TrainOptions train;
  CLI::App* t = app.add_subcommand("train", "Fine-tune a model with LRSA (or full) attention and export it");
  add_train_options(t, train);

  std::string task, model = "default", out;
  int32_t length = 4096, count = 100;
  uint64_t seed = 0;
  CLI::App* md = app.add_subcommand("make-data", "Write synthetic long-context tasks as JSONL");
  md->add_option("task", task, "passkey, multikey or facts")->required();
  md->add_option("--length", length, "Prompt length in tokens")->capture_default_str();
  md->add_option("--count", count, "Samples")->capture_default_str();
  md->add_option("--model,-m", model, "Model whose tokenizer measures the length")->capture_default_str();
  md->add_option("--seed", seed, "Seed")->capture_default_str();
  md->add_option("--out,-o", out, "Output file (default: stdout)");

  CLI11_PARSE(app, argc, argv);
  const auto fail = [](const absl::Status& s) {
    fmt::print(stderr, "lagtrain: error: {}\n", std::string(s.message()));
    return 1;
  };

  if (*t) {
    const absl::Status s = lagserve::trainer::run_training(train);
    return s.ok() ? 0 : fail(s);
  }
  auto parsed = lagserve::trainer::parse_task(task);
  if (!parsed.ok()) return fail(parsed.status());
  if (length < 1 || count < 1) return fail(absl::InvalidArgumentError("--length and --count must be >= 1"));
  auto path = lagserve::model::resolve_model_path(model);
  if (!path.ok()) return fail(path.status());
  auto m = lagserve::model::load_model(*path, {.weights = false});
  if (!m.ok()) return fail(m.status());
  // Generated in memory first: a failure leaves no half-written file.
  std::ostringstream jsonl;
  const absl::Status s = lagserve::trainer::write_task_jsonl(*parsed, length, count, seed, *(*m)->tokenizer, jsonl);
  if (!s.ok()) return fail(s);
  if (out.empty()) {
    std::cout << jsonl.str();
    return 0;
  }
  std::ofstream file(out);
  if (!(file << jsonl.str())) return fail(absl::InvalidArgumentError("--out: cannot write " + out));
  return 0;
}
