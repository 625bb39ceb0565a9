#include "lbctl/logs_command.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "logs/record.h"

namespace lbd::ctl {

namespace {

// How often --follow looks for new records (and for rotations, and for new apps).
constexpr int kFollowPeriodMs = 100;

Error failure(std::string message) { return Error(std::error_code(), std::move(message)); }

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Where app `app` logs in `dir`: <dir>/<app>.log (lbd run's layout) or <dir>/<app>/<app>.log (a
// config file's [lbd] log_dir, which gives each app a directory of its own).
std::optional<std::string> find_app_log(const std::string& dir, const std::string& app) {
  for (const std::string& path : {dir + "/" + app + ".log", dir + "/" + app + "/" + app + ".log"}) {
    if (is_regular_file(path)) return path;
  }
  return std::nullopt;
}

// Every app with a log in `dir`: app name -> its current log file.
Result<std::map<std::string, std::string>> list_apps(const std::string& dir) {
  std::map<std::string, std::string> apps;
  DIR* listing = ::opendir(dir.c_str());
  if (!listing) {
    if (errno == ENOENT || errno == ENOTDIR) return apps;
    return Error::from_errno("cannot read " + dir);
  }
  while (const dirent* entry = ::readdir(listing)) {
    std::string_view name = entry->d_name;
    std::string app(name.ends_with(".log") ? name.substr(0, name.size() - 4) : name);
    if (!logs::is_valid_app_name(app) || apps.contains(app)) continue;
    if (auto path = find_app_log(dir, app)) apps.emplace(app, *path);
  }
  ::closedir(listing);
  return apps;
}

// Splits `text` into its complete lines (appended to `lines`) and returns the unterminated rest:
// a record the writer has not finished writing, or nothing.
std::string take_lines(std::string_view text, std::vector<std::string>& lines) {
  size_t at = 0;
  for (size_t newline; (newline = text.find('\n', at)) != std::string_view::npos; at = newline + 1) {
    lines.emplace_back(text.substr(at, newline - at));
  }
  return std::string(text.substr(at));
}

// An open file and which file it is (rotation renames files; the inode stays).
struct OpenFile {
  UniqueFd fd;
  dev_t dev = 0;
  ino_t ino = 0;

  static Result<OpenFile> open(const std::string& path) {
    OpenFile file{UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC))};
    if (!file.fd) return Error::from_errno("cannot read " + path);
    struct stat st {};
    if (fstat(file.fd.get(), &st) != 0) return Error::from_errno("cannot read " + path);
    file.dev = st.st_dev;
    file.ino = st.st_ino;
    return file;
  }
  bool same(const OpenFile& other) const { return dev == other.dev && ino == other.ino; }
};

// Reads what is left in `fd` to its end: appends it to `partial`, then moves the complete lines
// from `partial` to `lines`. Returns the bytes read.
Result<uint64_t> drain(int fd, const std::string& path, std::string& partial, std::vector<std::string>& lines) {
  char buffer[64 * 1024];
  uint64_t total = 0;
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno("cannot read " + path);
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    partial.append(buffer, static_cast<size_t>(n));
  }
  partial = take_lines(partial, lines);
  return total;
}

// One app's log file, read incrementally: the history first, then what is appended (--follow).
class AppLog {
 public:
  static Result<AppLog> open(std::string path) {
    auto file = OpenFile::open(path);
    if (!file) return file.error();
    return AppLog(std::move(path), std::move(*file));
  }

  const std::string& path() const { return path_; }
  // <path>.n: the n-th newest rotated file.
  std::string rotated(unsigned n) const { return path_ + "." + std::to_string(n); }

  // The complete lines written since the last call (the first call: the whole file).
  Result<void> read_new(std::vector<std::string>& lines) {
    auto read = drain(file_.fd.get(), path_, partial_, lines);
    if (!read) return read.error();
    offset_ += *read;
    return {};
  }

  // read_new, following rotations (the path names a new file: lbd renamed app.log to app.log.1
  // and opened a fresh one) and truncation in place.
  Result<void> follow(std::vector<std::string>& lines) {
    // stat first, then drain: if the stat already sees a new file, ours was renamed before it,
    // and lbd writes nothing to a file after renaming it, so draining our fd now gets all of it.
    struct stat st {};
    const bool exists = ::stat(path_.c_str(), &st) == 0;
    LBD_TRY(read_new(lines));
    if (!exists) return {};  // between a rotation's rename and the new file's creation
    if (st.st_dev != file_.dev || st.st_ino != file_.ino) return follow_rotation(lines);
    if (static_cast<uint64_t>(st.st_size) < offset_) {
      // Truncated under us (not lbd's doing: logrotate's copytruncate, say): start over.
      if (::lseek(file_.fd.get(), 0, SEEK_SET) < 0) return Error::from_errno("cannot read " + path_);
      offset_ = 0;
      partial_.clear();
      return read_new(lines);
    }
    return {};
  }

 private:
  AppLog(std::string path, OpenFile file) : path_(std::move(path)), file_(std::move(file)) {}

  // Our file has been rotated away, perhaps more than once since we last looked (a burst fills a
  // small file in milliseconds): read every file written after ours, oldest first, then carry on
  // with the current one. Files are told apart by inode, since rotation renames them.
  Result<void> follow_rotation(std::vector<std::string>& lines) {
    // The current file first: if another rotation happens during the scan below, it only moves
    // files we have not scanned yet further up (seen later, or seen twice: skipped by inode).
    auto current = OpenFile::open(path_);
    if (!current) {
      // Gone again (rotated twice within a moment): the next look will find the new one.
      return current.error().code() == std::errc::no_such_file_or_directory ? Result<void>() : current.error();
    }
    // The rotated files as they are now, newest (.1) first, up to ours. If ours is not among them
    // it was the oldest and has been deleted, so all of them came after it.
    std::vector<std::pair<std::string, OpenFile>> newer;
    for (unsigned n = 1;; n++) {
      auto file = OpenFile::open(rotated(n));
      if (!file) break;
      if (file->same(file_)) break;
      if (file->same(*current)) continue;
      newer.emplace_back(rotated(n), std::move(*file));
    }
    for (auto it = newer.rbegin(); it != newer.rend(); ++it) {
      std::string rest;
      auto read = drain(it->second.fd.get(), it->first, rest, lines);
      if (!read) return read.error();
    }
    file_ = std::move(*current);
    offset_ = 0;
    partial_.clear();
    return read_new(lines);
  }

  std::string path_;
  OpenFile file_;         // what we are reading: the file that was at path_ when we opened it
  uint64_t offset_ = 0;   // bytes read from file_
  std::string partial_;   // bytes after the last '\n' read
};

// The records in `lines` that the options keep; others (not records, other workers) go.
std::vector<std::string> select(std::vector<std::string> lines, const LogsOptions& options) {
  std::erase_if(lines, [&](const std::string& line) {
    auto record = logs::parse_record(line);
    return !record || (options.worker && record->worker != *options.worker);
  });
  return lines;
}

// The last `options.lines` selected records of one app: its current file (whose fd stays open,
// positioned at its end, for --follow), then its rotated files, newest first, as far as needed.
Result<std::vector<std::string>> history(AppLog& log, const LogsOptions& options) {
  std::vector<std::string> lines;
  LBD_TRY(log.read_new(lines));
  std::vector<std::string> newest_first;  // the records kept, newest first
  auto keep_from = [&](std::vector<std::string> file_lines) {
    file_lines = select(std::move(file_lines), options);
    for (auto it = file_lines.rbegin(); it != file_lines.rend() && newest_first.size() < options.lines; ++it) {
      newest_first.push_back(std::move(*it));
    }
  };
  keep_from(std::move(lines));
  for (unsigned n = 1; newest_first.size() < options.lines; n++) {
    auto file = AppLog::open(log.rotated(n));
    if (!file) {
      if (file.error().code() == std::errc::no_such_file_or_directory) break;  // the oldest kept
      return file.error();
    }
    std::vector<std::string> file_lines;
    LBD_TRY(file->read_new(file_lines));
    keep_from(std::move(file_lines));
  }
  return std::vector<std::string>(std::make_move_iterator(newest_first.rbegin()),
                                  std::make_move_iterator(newest_first.rend()));
}

// Merges apps' records by timestamp, keeping each app's own order (a k-way merge, not a sort:
// records of one app stay as lbd wrote them even if the wall clock stepped back).
std::vector<std::string> merge_by_time(std::vector<std::vector<std::string>> sources) {
  if (sources.size() == 1) return std::move(sources.front());
  auto stamp = [](const std::string& line) { return std::string_view(line).substr(0, logs::kTimestampLength); };
  std::vector<size_t> next(sources.size(), 0);
  std::vector<std::string> merged;
  while (true) {
    size_t best = sources.size();
    for (size_t i = 0; i < sources.size(); i++) {
      if (next[i] == sources[i].size()) continue;
      if (best == sources.size() || stamp(sources[i][next[i]]) < stamp(sources[best][next[best]])) best = i;
    }
    if (best == sources.size()) return merged;
    merged.push_back(std::move(sources[best][next[best]++]));
  }
}

// Writes lines to stdout. False once stdout is closed (EPIPE: `lbctl logs -f | head`), which
// ends lbctl quietly: the reader has what it wanted.
bool print(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) {
    append_escaped(text, line);
    text += '\n';
  }
  std::string_view rest = text;
  while (!rest.empty()) {
    const ssize_t n = ::write(STDOUT_FILENO, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

void append_escaped(std::string& out, std::string_view line) {
  static constexpr char kHex[] = "0123456789abcdef";
  auto hex = [&](unsigned char c) {
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 15];
  };
  for (size_t i = 0; i < line.size(); i++) {
    const auto c = static_cast<unsigned char>(line[i]);
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      hex(c);
    } else if (c == 0xc2 && i + 1 < line.size() && static_cast<unsigned char>(line[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(line[i + 1]) <= 0x9f) {
      hex(c);  // U+0080..U+009F, the C1 controls in UTF-8 (CSI and friends on some terminals)
      hex(static_cast<unsigned char>(line[++i]));
    } else if (c == '\\' && i + 1 < line.size() && line[i + 1] == 'x') {
      out += "\\\\";  // a literal "\x" in the output stays distinguishable from an escape
    } else {
      out += static_cast<char>(c);
    }
  }
}

std::string default_log_dir() {
  const char* env = getenv("LBD_LOG_DIR");
  return env && *env ? env : kDefaultLogDir;
}

std::string check_logs_options(const LogsOptions& options) {
  if (!options.app.empty() && !logs::is_valid_app_name(options.app)) {
    return "bad app name '" + options.app + "' (letters, digits, '_', '.' and '-', starting with a letter or digit)";
  }
  if (options.dir.empty()) return "no log directory (--log-dir)";
  return {};
}

Result<void> run_logs(const LogsOptions& options) {
  // A closed stdout must come back as EPIPE from write(), not kill us.
  ::signal(SIGPIPE, SIG_IGN);
  // --follow ends on SIGINT or SIGTERM with status 0: take them through a signalfd. Blocked
  // before anything is read, so one that comes while the history prints is not lost.
  UniqueFd signals;
  if (options.follow) {
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigprocmask(SIG_BLOCK, &stop, nullptr);
    signals.reset(signalfd(-1, &stop, SFD_CLOEXEC));
    if (!signals) return Error::from_errno("signalfd");
  }

  // The apps to read: app name -> its log.
  std::map<std::string, AppLog> logs;
  if (!options.app.empty()) {
    auto path = find_app_log(options.dir, options.app);
    if (!path) return failure("no logs for app '" + options.app + "' in " + options.dir);
    auto log = AppLog::open(*path);
    if (!log) return log.error();
    logs.emplace(options.app, std::move(*log));
  } else {
    auto apps = list_apps(options.dir);
    if (!apps) return apps.error();
    for (const auto& [app, path] : *apps) {
      auto log = AppLog::open(path);
      if (log) {
        logs.emplace(app, std::move(*log));
      } else if (log.error().code() != std::errc::no_such_file_or_directory) {
        return log.error();
      }
    }
    if (logs.empty()) return failure("no logs in " + options.dir);
  }

  std::vector<std::vector<std::string>> per_app;
  for (auto& [app, log] : logs) {
    auto records = history(log, options);
    if (!records) return records.error();
    per_app.push_back(std::move(*records));
  }
  std::vector<std::string> last = merge_by_time(std::move(per_app));
  if (last.size() > options.lines) last.erase(last.begin(), last.end() - static_cast<ptrdiff_t>(options.lines));
  if (!print(last) || !options.follow) return {};

  while (true) {
    // Wait one period, or less if a stop signal comes or stdout's reader goes away (a pipe's
    // write end reports POLLERR then; asking for no events still gets it).
    pollfd waits[2] = {{signals.get(), POLLIN, 0}, {STDOUT_FILENO, 0, 0}};
    if (::poll(waits, 2, kFollowPeriodMs) < 0 && errno != EINTR) return Error::from_errno("poll");
    if (waits[0].revents & POLLIN) return {};
    if (waits[1].revents & (POLLERR | POLLHUP | POLLNVAL)) return {};

    if (options.app.empty()) {
      // An app that started logging since: all it has written is new.
      if (auto apps = list_apps(options.dir)) {
        for (const auto& [app, path] : *apps) {
          if (logs.contains(app)) continue;
          if (auto log = AppLog::open(path)) logs.emplace(app, std::move(*log));
        }
      }
    }
    std::vector<std::vector<std::string>> fresh;
    for (auto& [app, log] : logs) {
      std::vector<std::string> lines;
      LBD_TRY(log.follow(lines));
      fresh.push_back(select(std::move(lines), options));
    }
    if (!print(merge_by_time(std::move(fresh)))) return {};
  }
}

}  // namespace lbd::ctl
