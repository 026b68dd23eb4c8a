// UTF-8 helpers for the tokenizer: the GPT-2 byte<->unicode map that byte-level
// BPE vocabularies are written in, UTF-8 validation, and U+FFFD repair.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lagserve::model {

// The GPT-2 byte map: every byte gets a printable code point. Bytes that are
// already printable (33..126, 161..172, 174..255) map to themselves, the rest
// to 256, 257, ... in byte order ("Ġ" is the space, "Ċ" the newline).
char32_t byte_to_codepoint(uint8_t byte);
// Inverse of byte_to_codepoint; nullopt for code points outside the map.
std::optional<uint8_t> codepoint_to_byte(char32_t cp);
// UTF-8 encoding of byte_to_codepoint(byte) (1 or 2 bytes).
std::string_view byte_to_mapped_utf8(uint8_t byte);
// Maps every byte of raw text to its code point, as UTF-8 ("a b" -> "aĠb").
std::string bytes_to_mapped(std::string_view raw);
// Inverse of bytes_to_mapped; nullopt when `mapped` is not valid UTF-8 or has
// a code point outside the map.
std::optional<std::string> mapped_to_bytes(std::string_view mapped);

void append_utf8(std::string& out, char32_t cp);

// Outcome of reading one UTF-8 character at the front of a buffer.
struct Utf8Step {
  enum Kind { Valid, Invalid, Incomplete } kind;
  // Valid: length of the character. Invalid: length of the maximal invalid
  // subpart (at least 1; replaced by one U+FFFD, as Python and WHATWG do).
  // Incomplete: the bytes are a valid prefix that the buffer ends inside.
  size_t n_bytes;
  char32_t cp;  // Valid only
};
// Precondition: !s.empty().
Utf8Step utf8_step(std::string_view s);

// Length of the longest prefix of s that is valid UTF-8.
size_t utf8_valid_prefix(std::string_view s);
bool utf8_is_valid(std::string_view s);

// Replaces every invalid subpart with U+FFFD. When hold_incomplete_tail is
// true, a trailing incomplete character is not emitted: its bytes are left in
// *tail (which must then be non-null) to be completed by later input.
std::string utf8_repair(std::string_view s, bool hold_incomplete_tail = false,
                        std::string* tail = nullptr);

}  // namespace lagserve::model
