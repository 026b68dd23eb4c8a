// A terminal progress line for training: step, bar, loss, tokens/s, ETA.
// Redrawn in place on a terminal; one line per update otherwise.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace lagserve::trainer {

class ProgressBar {
 public:
  ProgressBar(int64_t total_steps, bool enabled, std::FILE* out = stderr);
  // Shows the state after `step` steps (1-based) with an extra text.
  void update(int64_t step, double elapsed_s, int64_t steps_this_run, const std::string& text);
  // Ends the in-place line (before other output, and at the end).
  void finish();

 private:
  int64_t total_;
  bool enabled_;
  bool tty_;
  bool open_line_ = false;
  std::FILE* out_;
};

// "1:02:03", "2:03" or "7s".
std::string format_duration(double seconds);

}  // namespace lagserve::trainer
