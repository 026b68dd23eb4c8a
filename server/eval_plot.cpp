#include "server/eval_plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <set>

#include <fmt/format.h>

namespace lagserve::cli {
namespace {

// 5x7 glyphs, one byte per row, bit 4 the leftmost pixel. Letters are drawn
// upper case.
struct Glyph {
  char c;
  std::array<uint8_t, 7> rows;
};
constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}}, {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}},
};

struct Rgb {
  uint8_t r, g, b;
};
constexpr Rgb kBlack{0, 0, 0}, kGrid{220, 220, 220};
constexpr Rgb kPalette[] = {{31, 119, 180}, {214, 39, 40}, {44, 160, 44},
                            {255, 127, 14}, {148, 103, 189}, {140, 86, 75}};
constexpr int kScale = 2, kAdvance = 6 * kScale, kGlyphH = 7 * kScale;

class Canvas {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<size_t>(w) * h * 3, 255) {}
  void set(int x, int y, Rgb c) {
    if (x < 0 || y < 0 || x >= w_ || y >= h_) return;
    unsigned char* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
  }
  void fill(int x0, int y0, int x1, int y1, Rgb c) {  // inclusive corners
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x) set(x, y, c);
  }
  // A line of the given width (a square brush stepped along the longer axis).
  void line(double x0, double y0, double x1, double y1, Rgb c, int width) {
    const int n = static_cast<int>(std::ceil(std::max(std::abs(x1 - x0), std::abs(y1 - y0)))) + 1;
    const int lo = -(width - 1) / 2, hi = width / 2;
    for (int i = 0; i <= n; ++i) {
      const double t = n == 0 ? 0 : static_cast<double>(i) / n;
      const int x = static_cast<int>(std::lround(x0 + t * (x1 - x0)));
      const int y = static_cast<int>(std::lround(y0 + t * (y1 - y0)));
      fill(x + lo, y + lo, x + hi, y + hi, c);
    }
  }
  void text(int x, int y, const std::string& s, Rgb c) {
    for (char ch : s) {
      const char u = ch >= 'a' && ch <= 'z' ? static_cast<char>(ch - 'a' + 'A') : ch;
      for (const Glyph& g : kFont) {
        if (g.c != u) continue;
        for (int r = 0; r < 7; ++r)
          for (int b = 0; b < 5; ++b)
            if (g.rows[r] & (0x10 >> b)) fill(x + b * kScale, y + r * kScale, x + b * kScale + kScale - 1,
                                              y + r * kScale + kScale - 1, c);
      }
      x += kAdvance;
    }
  }
  static int text_width(const std::string& s) { return static_cast<int>(s.size()) * kAdvance; }
  int width() const { return w_; }
  int height() const { return h_; }
  const std::vector<unsigned char>& pixels() const { return px_; }

 private:
  int w_, h_;
  std::vector<unsigned char> px_;
};

uint32_t crc32(const unsigned char* data, size_t n, uint32_t crc = 0) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void put_u32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
}

void put_chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  std::string body = std::string(type, 4) + data;
  out += body;
  put_u32(out, crc32(reinterpret_cast<const unsigned char*>(body.data()), body.size()));
}

// Deflate (RFC 1951) with the fixed Huffman codes, its matches looked for
// one pixel back and one row back only: a chart is flat colour and rows that
// repeat, which those two distances catch (a 3-panel plot: 1.6 MB stored,
// some KB this way).
class BitWriter {
 public:
  explicit BitWriter(std::string& out) : out_(out) {}
  void bits(uint32_t v, int n) {  // least significant bit first
    acc_ |= static_cast<uint64_t>(v) << n_;
    n_ += n;
    while (n_ >= 8) {
      out_.push_back(static_cast<char>(acc_ & 0xFF));
      acc_ >>= 8;
      n_ -= 8;
    }
  }
  void code(uint32_t c, int n) {  // a Huffman code: most significant bit first
    uint32_t r = 0;
    for (int i = 0; i < n; ++i) r |= ((c >> i) & 1u) << (n - 1 - i);
    bits(r, n);
  }
  void flush() {
    if (n_ > 0) out_.push_back(static_cast<char>(acc_ & 0xFF));
    acc_ = 0;
    n_ = 0;
  }

 private:
  std::string& out_;
  uint64_t acc_ = 0;
  int n_ = 0;
};

void put_symbol(BitWriter& w, int v) {  // literal/length symbol, fixed code
  if (v < 144) w.code(0x30 + v, 8);
  else if (v < 256) w.code(0x190 + v - 144, 9);
  else if (v < 280) w.code(v - 256, 7);
  else w.code(0xC0 + v - 280, 8);
}

void deflate_fixed(const std::string& raw, size_t row_bytes, std::string& out) {
  static constexpr int kLenBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                       31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
  static constexpr int kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                        2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
  static constexpr int kDistBase[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
                                        193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
  static constexpr int kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                         6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
  BitWriter w(out);
  w.bits(1, 1);  // BFINAL
  w.bits(1, 2);  // BTYPE 01: fixed Huffman codes
  const size_t n = raw.size();
  const size_t dists[2] = {3, row_bytes <= 32768 ? row_bytes : 3};
  size_t i = 0;
  while (i < n) {
    size_t best = 0, best_d = 0;
    for (size_t d : dists) {
      if (i < d) continue;
      size_t len = 0;
      while (len < 258 && i + len < n && raw[i + len] == raw[i + len - d]) ++len;
      if (len > best) {
        best = len;
        best_d = d;
      }
    }
    if (best < 3) {
      put_symbol(w, static_cast<unsigned char>(raw[i++]));
      continue;
    }
    int li = 28;
    while (kLenBase[li] > static_cast<int>(best)) --li;
    put_symbol(w, 257 + li);
    w.bits(static_cast<uint32_t>(best - kLenBase[li]), kLenExtra[li]);
    int di = 29;
    while (kDistBase[di] > static_cast<int>(best_d)) --di;
    w.code(static_cast<uint32_t>(di), 5);
    w.bits(static_cast<uint32_t>(best_d - kDistBase[di]), kDistExtra[di]);
    i += best;
  }
  put_symbol(w, 256);  // end of block
  w.flush();
}

constexpr int kPanelW = 440, kPanelH = 330, kLeft = 64, kRight = 24, kTop = 44, kBottom = 62;

void draw_panel(Canvas& cv, int ox, const PlotPanel& panel) {
  const int x0 = ox + kLeft, x1 = ox + kPanelW - kRight, y0 = kTop, y1 = kPanelH - kBottom;
  cv.text(ox + (kPanelW - Canvas::text_width(panel.title)) / 2, 12, panel.title, kBlack);
  std::set<double> xs;
  for (const PlotLine& l : panel.lines) xs.insert(l.compression.begin(), l.compression.end());
  const double max_log = xs.empty() ? 1 : std::max(1.0, std::log2(*xs.rbegin()));
  auto px = [&](double c) { return x0 + std::log2(std::max(c, 1.0)) / max_log * (x1 - x0); };
  auto py = [&](double a) { return y1 - std::clamp(a, 0.0, 1.0) * (y1 - y0); };
  for (int q = 0; q <= 4; ++q) {  // 0, 25, 50, 75, 100 %
    const int y = static_cast<int>(std::lround(py(q / 4.0)));
    cv.line(x0, y, x1, y, kGrid, 1);
    const std::string label = std::to_string(q * 25);
    cv.text(x0 - 8 - Canvas::text_width(label), y - kGlyphH / 2, label, kBlack);
  }
  cv.text(ox + 4, y0 - 26, "%", kBlack);
  cv.line(x0, y0, x0, y1, kBlack, 2);
  cv.line(x0, y1, x1, y1, kBlack, 2);
  for (double c : xs) {
    const int x = static_cast<int>(std::lround(px(c)));
    cv.line(x, y1, x, y1 + 6, kBlack, 2);
    const std::string label = fmt::format("{:g}x", c);
    cv.text(x - Canvas::text_width(label) / 2, y1 + 12, label, kBlack);
  }
  const std::string axis = "KV compression";
  cv.text(x0 + (x1 - x0 - Canvas::text_width(axis)) / 2, y1 + 36, axis, kBlack);
  for (size_t i = 0; i < panel.lines.size(); ++i) {
    const PlotLine& l = panel.lines[i];
    const Rgb c = kPalette[i % std::size(kPalette)];
    for (size_t j = 0; j < l.compression.size(); ++j) {
      const double x = px(l.compression[j]), y = py(l.accuracy[j]);
      if (j > 0) cv.line(px(l.compression[j - 1]), py(l.accuracy[j - 1]), x, y, c, 3);
      cv.fill(static_cast<int>(x) - 4, static_cast<int>(y) - 4, static_cast<int>(x) + 4,
              static_cast<int>(y) + 4, c);
    }
  }
}

}  // namespace

std::string encode_png_rgb(int width, int height, const std::vector<unsigned char>& rgb) {
  // Rows with filter byte 0, in zlib's format: one deflate block.
  std::string raw;
  raw.reserve(static_cast<size_t>(height) * (width * 3 + 1));
  for (int y = 0; y < height; ++y) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(&rgb[static_cast<size_t>(y) * width * 3]), width * 3);
  }
  std::string z = "\x78\x01";
  deflate_fixed(raw, static_cast<size_t>(width) * 3 + 1, z);
  uint32_t a = 1, b = 0;  // Adler-32
  for (unsigned char ch : raw) {
    a = (a + ch) % 65521;
    b = (b + a) % 65521;
  }
  put_u32(z, (b << 16) | a);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, deflate, no filter, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", z);
  put_chunk(png, "IEND", "");
  return png;
}

absl::Status write_accuracy_plot(const std::string& path, const std::vector<PlotPanel>& panels) {
  if (panels.empty()) return absl::InvalidArgumentError("nothing to plot");
  size_t n_lines = 0;
  for (const PlotPanel& p : panels) {
    n_lines = std::max(n_lines, p.lines.size());
    for (const PlotLine& l : p.lines) {
      if (l.compression.size() != l.accuracy.size()) {
        return absl::InvalidArgumentError(fmt::format("plot line '{}': {} x values, {} y values",
                                                      l.label, l.compression.size(), l.accuracy.size()));
      }
    }
  }
  // The legend below the panels names each line (the same colour in every panel).
  const int legend_h = 12 + 24 * static_cast<int>(n_lines);
  Canvas cv(kPanelW * static_cast<int>(panels.size()), kPanelH + legend_h);
  for (size_t i = 0; i < panels.size(); ++i) draw_panel(cv, static_cast<int>(i) * kPanelW, panels[i]);
  const PlotPanel& first = *std::max_element(panels.begin(), panels.end(), [](const auto& a, const auto& b) {
    return a.lines.size() < b.lines.size();
  });
  for (size_t i = 0; i < first.lines.size(); ++i) {
    const int y = kPanelH + 4 + 24 * static_cast<int>(i);
    cv.fill(kLeft, y + 2, kLeft + 28, y + kGlyphH - 3, kPalette[i % std::size(kPalette)]);
    cv.text(kLeft + 40, y, first.lines[i].label, kBlack);
  }
  std::ofstream out(path, std::ios::binary);
  const std::string png = encode_png_rgb(cv.width(), cv.height(), cv.pixels());
  out.write(png.data(), static_cast<std::streamsize>(png.size()));
  if (!out) return absl::InvalidArgumentError("cannot write " + path);
  return absl::OkStatus();
}

}  // namespace lagserve::cli
