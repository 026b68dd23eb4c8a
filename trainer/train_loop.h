// `lagtrain train`: load, fine-tune with LRSA (or full) attention, evaluate,
// checkpoint and resume, export a Hugging Face folder that lagserve serves.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "trainer/train_options.h"

namespace lagserve::trainer {

// Learning rate after `step` optimizer steps (0-based): linear warmup to lr
// over `warmup` steps, then cosine decay to lr * min_lr_ratio at `steps`.
double lr_at(const TrainOptions& o, int64_t step);

// Runs training to o.steps (or o.stop_after), writing <out>/train_log.jsonl
// (one JSON line per step and per evaluation), checkpoints, and at the end
// the export. Bad options, data or model files are InvalidArgument or
// NotFound with a message that says what is wrong.
absl::Status run_training(const TrainOptions& o);

}  // namespace lagserve::trainer
