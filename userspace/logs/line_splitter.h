// Cuts the bytes read from one pipe into lines. Pure logic, no kernel objects.
//
//   LineSplitter splitter;                        // one per (worker, stream) pipe
//   splitter.feed(bytes, [](std::string_view text, bool continuation) { ... });
//   splitter.finish(sink);                        // at EOF: the last line, if it had no '\n'
//
// A child writes whatever it likes: half a line now, the rest later, or a line of a megabyte.
// The splitter holds a partial line until its '\n' arrives, so what it emits is always a whole
// line (without the '\n'). A line longer than `max_line` is emitted in pieces of `max_line`
// bytes: memory stays bounded per pipe, and nothing is lost. Every piece after the first of a
// line is marked `continuation`, so a reader can tell "the rest of the previous line of this
// stream" from a new line. Each piece is still its own whole record downstream, so a long line
// never tears another stream's line.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace lbd::logs {

// Receives each line (or piece of a long line). `text` is valid only during the call.
using LineSink = std::function<void(std::string_view text, bool continuation)>;

class LineSplitter {
 public:
  static constexpr size_t kDefaultMaxLine = 16 * 1024;

  explicit LineSplitter(size_t max_line = kDefaultMaxLine);

  // Feeds bytes as read; emits every line they complete, and every full `max_line` piece.
  void feed(std::string_view bytes, const LineSink& sink);
  // End of input: emits the partial line left, if any, and starts afresh.
  void finish(const LineSink& sink);

  // Bytes of the current partial line held (at most max_line).
  size_t pending() const { return partial_.size(); }
  size_t max_line() const { return max_line_; }

 private:
  void emit(std::string_view text, const LineSink& sink);

  size_t max_line_;
  std::string partial_;       // the current line's bytes not emitted yet
  bool continuing_ = false;   // a piece of the current line has been emitted already
};

}  // namespace lbd::logs
