// The plot of `lagserve eval`: accuracy against KV compression, one line per
// model, one panel per context length, written as a PNG with no library (an
// RGB raster, a 5x7 bitmap font, stored deflate blocks).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace lagserve::cli {

struct PlotLine {
  std::string label;                // the model
  std::vector<double> compression;  // x: 1 (policy off), 2, 4, 8, ... ascending
  std::vector<double> accuracy;     // y: in [0, 1], one per x
};

struct PlotPanel {
  std::string title;  // e.g. "4096 tokens"
  std::vector<PlotLine> lines;
};

// Writes the panels side by side into path. x is on a log2 axis.
// Errors: no panel, a line whose x and y differ in length, a failed write.
absl::Status write_accuracy_plot(const std::string& path, const std::vector<PlotPanel>& panels);

// The PNG bytes of an RGB image (rgb: height rows of width * 3 bytes).
std::string encode_png_rgb(int width, int height, const std::vector<unsigned char>& rgb);

}  // namespace lagserve::cli
