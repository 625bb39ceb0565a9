// What an operator's message to workers may be (`lbctl send`, docs/ARCHITECTURE.md, section 6):
// one line of text. One rule, here, checked by lbctl before it asks, by lbd on the control
// socket, and by lbd's worker on its status channel:
// - not empty, at most kMaxMessageText bytes: with its newline, a line is then at most PIPE_BUF
//   (4096) bytes, which a program's message pipe takes in one atomic write or not at all, so a
//   reader never sees half a line;
// - no control characters but tab: a newline (or a carriage return, which Node's readline also
//   ends a line at) would make it two lines, and the text goes into logs as it is;
// - valid UTF-8: it travels in the control protocol's JSON.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace lbd {

inline constexpr size_t kMaxMessageText = 4095;

// Empty when `text` may be sent; otherwise why not, in words an operator can act on.
inline std::string message_text_problem(std::string_view text) {
  if (text.empty()) return "the message is empty";
  if (text.size() > kMaxMessageText) {
    return "the message is " + std::to_string(text.size()) + " bytes; at most " + std::to_string(kMaxMessageText) +
           " may be sent";
  }
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n' || c == '\r') return "the message is one line: it may not contain a newline";
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      return "the message may not contain control characters (byte " + std::to_string(c) + " at " +
             std::to_string(i) + ")";
    }
    if (c < 0x80) {
      i++;
      continue;
    }
    // A UTF-8 sequence: its length from the lead byte, continuation bytes 10xxxxxx, no overlong
    // forms, no surrogates, nothing past U+10FFFF.
    size_t length = 0;
    uint32_t code = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      length = 2;
      code = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      length = 3;
      code = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      length = 4;
      code = c & 0x07;
    }
    bool valid = length > 0 && i + length <= text.size();
    for (size_t k = 1; valid && k < length; k++) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xc0) == 0x80;
      code = (code << 6) | (next & 0x3f);
    }
    valid = valid && !(length == 3 && (code < 0x800 || (code >= 0xd800 && code <= 0xdfff))) &&
            !(length == 4 && (code < 0x10000 || code > 0x10ffff));
    if (!valid) return "the message is not valid UTF-8 (at byte " + std::to_string(i) + ")";
    // C1 controls (a terminal's CSI among them) and the Unicode line and paragraph separators,
    // which some readers (Python's splitlines) take for line ends.
    if ((code >= 0x80 && code <= 0x9f) || code == 0x2028 || code == 0x2029) {
      char name[16];
      snprintf(name, sizeof(name), "U+%04X", static_cast<unsigned>(code));
      return std::string("the message may not contain control characters (") + name + " at " + std::to_string(i) + ")";
    }
    i += length;
  }
  return {};
}

}  // namespace lbd
