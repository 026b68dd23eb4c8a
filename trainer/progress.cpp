// ProgressBar: the training progress line.
#include "trainer/progress.h"

#include <unistd.h>

#include <cmath>

#include <fmt/format.h>

namespace lagserve::trainer {

ProgressBar::ProgressBar(int64_t total_steps, bool enabled, std::FILE* out)
    : total_(total_steps), enabled_(enabled), tty_(isatty(fileno(out)) != 0), out_(out) {}

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
  if (s >= 60) return fmt::format("{}:{:02}", s / 60, s % 60);
  return fmt::format("{}s", s);
}

void ProgressBar::update(int64_t step, double elapsed_s, int64_t steps_this_run,
                         const std::string& text) {
  if (!enabled_) return;
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * step / total_) : kWidth;
  const double eta = steps_this_run > 0 ? elapsed_s / steps_this_run * (total_ - step) : 0;
  const std::string line =
      fmt::format("step {}/{} [{}{}] {} | {} elapsed, ETA {}", step, total_,
                  std::string(filled, '#'), std::string(kWidth - filled, '.'), text,
                  format_duration(elapsed_s), format_duration(eta));
  if (tty_) {
    fmt::print(out_, "\r\033[K{}", line);
    open_line_ = true;
  } else {
    fmt::print(out_, "{}\n", line);
  }
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (open_line_) fmt::print(out_, "\n");
  open_line_ = false;
  std::fflush(out_);
}

}  // namespace lagserve::trainer
