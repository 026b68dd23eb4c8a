// Options of `lagtrain train`, plain data (no LibTorch) so the CLI can fill
// them without including the trainer's heavy headers.
#pragma once

#include <cstdint>
#include <string>

namespace lagserve::trainer {

struct TrainOptions {
  std::string model = "default";  // GGUF file or Hugging Face folder ("default": the cached default)
  std::string data;               // training JSONL
  std::string eval_data;          // evaluation JSONL (optional)
  std::string out;                // the Hugging Face export, written at the end
  std::string checkpoint_dir;     // default: <out>/checkpoint
  bool resume = false;            // continue from checkpoint_dir

  std::string attention = "lrsa";  // "lrsa" or "full"
  std::string lagkv;               // policy spec; empty: the model's own policy, else "on"
  int32_t seq_len = 2048;
  int32_t batch_size = 1;
  int32_t grad_accum = 1;
  int64_t steps = 100;
  int64_t warmup = 10;
  int64_t stop_after = 0;  // stop (after checkpointing) at this step; 0: run to `steps`
  double lr = 1e-4;
  double min_lr_ratio = 0.1;  // cosine floor, as a fraction of lr
  double weight_decay = 0.0;
  double clip = 1.0;  // gradient norm clip; 0 disables
  uint64_t seed = 0;
  int64_t eval_every = 0;  // 0: evaluate only at the end (when eval_data is set)
  int64_t eval_batches = 8;
  int64_t checkpoint_every = 0;  // 0: only at stop
  int64_t log_every = 1;
  bool checkpoint_activations = false;
  std::string device = "auto";  // "cpu", "cuda" or "auto"
  int32_t threads = 0;          // CPU threads; 0: all
  std::string export_dtype = "f32";  // "f32" or "bf16"
  bool progress = true;
};

}  // namespace lagserve::trainer
