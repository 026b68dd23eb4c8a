// GPT-2 byte<->unicode map and UTF-8 validation/repair (see unicode_bytes.h).
#include "engine/model/unicode_bytes.h"

#include <array>

namespace lagserve::model {
namespace {

struct ByteMap {
  std::array<char32_t, 256> to_cp{};
  std::array<std::string, 256> to_utf8;
  // Code points of the map are all below 324 (256 + 68 remapped bytes).
  std::array<int16_t, 324> from_cp{};

  ByteMap() {
    from_cp.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) ||
                             (b >= 174 && b <= 255);
      to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    for (int b = 0; b < 256; ++b) {
      append_utf8(to_utf8[b], to_cp[b]);
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

char32_t byte_to_codepoint(uint8_t byte) { return byte_map().to_cp[byte]; }

std::optional<uint8_t> codepoint_to_byte(char32_t cp) {
  const auto& from = byte_map().from_cp;
  if (cp >= from.size() || from[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(from[cp]);
}

std::string_view byte_to_mapped_utf8(uint8_t byte) { return byte_map().to_utf8[byte]; }

std::string bytes_to_mapped(std::string_view raw) {
  const auto& map = byte_map();
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) out += map.to_utf8[c];
  return out;
}

std::optional<std::string> mapped_to_bytes(std::string_view mapped) {
  std::string out;
  out.reserve(mapped.size());
  while (!mapped.empty()) {
    const Utf8Step step = utf8_step(mapped);
    if (step.kind != Utf8Step::Valid) return std::nullopt;
    const auto byte = codepoint_to_byte(step.cp);
    if (!byte) return std::nullopt;
    out.push_back(static_cast<char>(*byte));
    mapped.remove_prefix(step.n_bytes);
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

Utf8Step utf8_step(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char lead = p[0];
  if (lead < 0x80) return {Utf8Step::Valid, 1, lead};
  // Expected length and the allowed range of the second byte (Unicode 15,
  // table 3-7); later bytes are always 80..BF.
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  char32_t cp = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    len = 2, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    len = 3, cp = lead & 0x0F;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    len = 4, cp = lead & 0x07;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return {Utf8Step::Invalid, 1, 0};
  }
  for (size_t i = 1; i < len; ++i) {
    if (i >= s.size()) return {Utf8Step::Incomplete, i, 0};
    const unsigned char c = p[i];
    const bool ok = i == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return {Utf8Step::Invalid, i, 0};
    cp = (cp << 6) | (c & 0x3F);
  }
  return {Utf8Step::Valid, len, cp};
}

size_t utf8_valid_prefix(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Utf8Step step = utf8_step(s.substr(pos));
    if (step.kind != Utf8Step::Valid) break;
    pos += step.n_bytes;
  }
  return pos;
}

bool utf8_is_valid(std::string_view s) { return utf8_valid_prefix(s) == s.size(); }

std::string utf8_repair(std::string_view s, bool hold_incomplete_tail,
                        std::string* tail) {
  std::string out;
  out.reserve(s.size());
  if (tail) tail->clear();
  size_t pos = 0;
  while (pos < s.size()) {
    const Utf8Step step = utf8_step(s.substr(pos));
    if (step.kind == Utf8Step::Valid) {
      out.append(s.substr(pos, step.n_bytes));
    } else if (step.kind == Utf8Step::Incomplete && hold_incomplete_tail) {
      // An incomplete character can only occur at the very end of the input.
      tail->assign(s.substr(pos));
      break;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
    }
    pos += step.n_bytes;
  }
  return out;
}

}  // namespace lagserve::model
