// LineSplitter (userspace/logs/line_splitter.h): bytes from one pipe, cut anywhere, become whole
// lines; a line longer than the bound comes out in marked pieces; EOF flushes the partial line.
#include "logs/line_splitter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lbd::logs {
namespace {

struct Piece {
  std::string text;
  bool continuation;
  bool operator==(const Piece&) const = default;
};

std::ostream& operator<<(std::ostream& out, const Piece& piece) {
  return out << '{' << '"' << piece.text << '"' << (piece.continuation ? ", continuation" : "") << '}';
}

// Feeds `chunks` one by one (and EOF when asked), collecting what comes out.
class Collect {
 public:
  explicit Collect(size_t max_line = LineSplitter::kDefaultMaxLine) : splitter_(max_line) {}

  Collect& feed(const std::string& bytes) {
    splitter_.feed(bytes, sink());
    return *this;
  }
  Collect& finish() {
    splitter_.finish(sink());
    return *this;
  }
  const std::vector<Piece>& pieces() const { return pieces_; }
  const LineSplitter& splitter() const { return splitter_; }

 private:
  LineSink sink() {
    return [this](std::string_view text, bool continuation) { pieces_.push_back({std::string(text), continuation}); };
  }
  LineSplitter splitter_;
  std::vector<Piece> pieces_;
};

TEST(LogSplitter, WholeLinesInOneRead) {
  Collect c;
  c.feed("one\ntwo\nthree\n");
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"one", false}, {"two", false}, {"three", false}}));
  EXPECT_EQ(c.splitter().pending(), 0u);
}

TEST(LogSplitter, PartialLineWaitsForItsEnd) {
  Collect c;
  c.feed("hel");
  EXPECT_TRUE(c.pieces().empty());
  EXPECT_EQ(c.splitter().pending(), 3u);
  c.feed("lo wor");
  EXPECT_TRUE(c.pieces().empty());
  c.feed("ld\nnext");
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"hello world", false}}));
  c.feed("\n");
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"hello world", false}, {"next", false}}));
}

TEST(LogSplitter, EveryCutOfTheInputGivesTheSameLines) {
  const std::string input = "alpha\n\nbeta gamma\nd\n" + std::string(100, 'x') + "\nend\n";
  const std::vector<Piece> expected = {
      {"alpha", false}, {"", false}, {"beta gamma", false}, {"d", false}, {std::string(100, 'x'), false}, {"end", false}};
  for (size_t step = 1; step <= input.size(); step++) {
    Collect c;
    for (size_t at = 0; at < input.size(); at += step) c.feed(input.substr(at, step));
    EXPECT_EQ(c.pieces(), expected) << "fed in chunks of " << step;
  }
}

TEST(LogSplitter, EmptyLinesAreLines) {
  Collect c;
  c.feed("\n\n").feed("\n");
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"", false}, {"", false}, {"", false}}));
}

TEST(LogSplitter, EofFlushesThePartialLine) {
  Collect c;
  c.feed("complete\nno newline at the e").feed("nd").finish();
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"complete", false}, {"no newline at the end", false}}));
  EXPECT_EQ(c.splitter().pending(), 0u);
}

TEST(LogSplitter, EofWithNothingPendingEmitsNothing) {
  Collect c;
  c.feed("done\n").finish();
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"done", false}}));
  Collect empty;
  empty.finish();
  EXPECT_TRUE(empty.pieces().empty());
}

TEST(LogSplitter, LineOfExactlyTheBoundStaysWhole) {
  Collect c(8);
  c.feed("12345678\n");
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"12345678", false}}));
  // Also when its newline comes in a later read.
  Collect later(8);
  later.feed("12345678");
  EXPECT_TRUE(later.pieces().empty());
  later.feed("\n");
  EXPECT_EQ(later.pieces(), (std::vector<Piece>{{"12345678", false}}));
}

TEST(LogSplitter, LongLineComesInMarkedPieces) {
  Collect c(8);
  c.feed("abcdefghijklmnopqrst\nshort\n");
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{
                            {"abcdefgh", false}, {"ijklmnop", true}, {"qrst", true}, {"short", false}}));
}

TEST(LogSplitter, LongLineAcrossReadsIsCutAtTheBoundAndNeverHeldBeyondIt) {
  const std::string line(50, 'z');
  Collect c(8);
  for (size_t at = 0; at < line.size(); at += 3) {
    c.feed(line.substr(at, 3));
    EXPECT_LE(c.splitter().pending(), 8u);
  }
  c.feed("\n");
  std::string joined;
  ASSERT_EQ(c.pieces().size(), 7u);  // 6 x 8 + 2
  for (size_t i = 0; i < c.pieces().size(); i++) {
    EXPECT_EQ(c.pieces()[i].continuation, i > 0) << i;
    EXPECT_LE(c.pieces()[i].text.size(), 8u);
    joined += c.pieces()[i].text;
  }
  EXPECT_EQ(joined, line);
}

TEST(LogSplitter, LongLineWithoutNewlineAtEofIsFlushedAsAContinuation) {
  Collect c(4);
  c.feed("abcdefg").finish();
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"abcd", false}, {"efg", true}}));
  // The next line starts afresh.
  c.feed("x\n");
  EXPECT_EQ(c.pieces().back(), (Piece{"x", false}));
}

TEST(LogSplitter, LineOfTwiceTheBoundHasNoEmptyTail) {
  Collect c(4);
  c.feed("abcdefgh\nnext\n");
  EXPECT_EQ(c.pieces(), (std::vector<Piece>{{"abcd", false}, {"efgh", true}, {"next", false}}));
}

TEST(LogSplitter, BytesOtherThanNewlinePassThrough) {
  Collect c;
  const std::string odd = std::string("tab\there\r, nul ") + '\0' + " and \xff\xfe";
  c.feed(odd + "\n");
  ASSERT_EQ(c.pieces().size(), 1u);
  EXPECT_EQ(c.pieces()[0].text, odd);
}

}  // namespace
}  // namespace lbd::logs
