#include "logs/line_splitter.h"

namespace lbd::logs {

LineSplitter::LineSplitter(size_t max_line) : max_line_(max_line == 0 ? 1 : max_line) {
  partial_.reserve(max_line_);
}

void LineSplitter::emit(std::string_view text, const LineSink& sink) {
  sink(text, continuing_);
  continuing_ = true;
}

void LineSplitter::feed(std::string_view bytes, const LineSink& sink) {
  while (!bytes.empty()) {
    const size_t newline = bytes.find('\n');
    const bool ends_line = newline != std::string_view::npos;
    // The bytes of the current line in this read.
    std::string_view chunk = ends_line ? bytes.substr(0, newline) : bytes;
    bytes.remove_prefix(ends_line ? newline + 1 : bytes.size());

    // Cut full pieces only while more of the line is known to follow (strictly longer than the
    // bound), so a line of exactly max_line bytes stays whole and a cut never leaves an empty
    // last piece. Pieces straight from the input are emitted without a copy.
    while (partial_.size() + chunk.size() > max_line_) {
      if (partial_.empty()) {
        emit(chunk.substr(0, max_line_), sink);
        chunk.remove_prefix(max_line_);
      } else {
        const size_t take = max_line_ - partial_.size();
        partial_.append(chunk.substr(0, take));
        chunk.remove_prefix(take);
        emit(partial_, sink);
        partial_.clear();
      }
    }

    if (!ends_line) {
      partial_.append(chunk);
      continue;
    }
    if (partial_.empty()) {
      emit(chunk, sink);
    } else {
      partial_.append(chunk);
      emit(partial_, sink);
      partial_.clear();
    }
    continuing_ = false;
  }
}

void LineSplitter::finish(const LineSink& sink) {
  // A cut always leaves at least one byte behind, so a line in progress is never empty here.
  if (!partial_.empty()) emit(partial_, sink);
  partial_.clear();
  continuing_ = false;
}

}  // namespace lbd::logs
