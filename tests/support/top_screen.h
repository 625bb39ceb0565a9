// lbctl top's table, read back from its screen (tmux) or a snapshot, for the tests of lbctl top
// and of its keys.
#pragma once

#include <cctype>
#include <sstream>
#include <string>
#include <vector>

namespace lbd::test {

// One worker's line of lbctl top's table, read back from text.
struct TableRow {
  int slot = -1;
  std::string pid;
  std::string state;
  std::string requests_per_s;  // as shown: "2043", "12.3k", "-"
  std::string p99;             // as shown: "250us", ">10s", "-"
};

// The rows under the "SLOT ..." column header of a screen or a snapshot. REQ/S is right-aligned
// under its title, so the rate is the last word before the title's end.
inline std::vector<TableRow> table_rows(const std::string& text) {
  std::vector<TableRow> rows;
  std::istringstream lines(text);
  std::string line;
  size_t rate_end = std::string::npos;
  while (std::getline(lines, line)) {
    if (rate_end == std::string::npos) {
      if (line.starts_with("SLOT ") && line.find("REQ/S") != std::string::npos) rate_end = line.find("REQ/S") + 5;
      continue;
    }
    if (line.empty() || !std::isdigit(static_cast<unsigned char>(line[0]))) break;
    TableRow row;
    std::istringstream words(line);
    std::string cpu;
    words >> row.slot >> row.pid >> cpu >> row.state;
    std::istringstream before_rate(line.substr(0, rate_end));
    for (std::string word; before_rate >> word;) row.requests_per_s = word;
    for (std::string word; words >> word;) row.p99 = word;  // the last column
    rows.push_back(row);
  }
  return rows;
}

}  // namespace lbd::test
