#include "logs/log_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace lbd::logs {

LogFile::LogFile(LogFileOptions options)
    : options_(std::move(options)), path_(options_.dir + "/" + options_.app + ".log") {}

Result<LogFile> LogFile::open(LogFileOptions options) {
  LogFile file(std::move(options));
  LBD_TRY(file.reopen());
  return file;
}

Result<void> LogFile::reopen() {
  // O_NOFOLLOW: lbd runs as root, and a symlink planted at app.log must not make it append to
  // some other file. O_NONBLOCK only for the open itself: if app.log is a FIFO nobody reads, the
  // open fails (ENXIO) instead of hanging lbd's start-up.
  UniqueFd fd(::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640));
  if (!fd) return Error::from_errno("open " + path_);
  // Readable by the program's group (its developers can tail it), by nobody else.
  if (options_.group >= 0 && fchown(fd.get(), static_cast<uid_t>(-1), static_cast<gid_t>(options_.group)) != 0) {
    return Error::from_errno("chown " + path_);
  }
  const int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
    return Error::from_errno("fcntl " + path_);
  }
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return Error::from_errno("fstat " + path_);
  fd_ = std::move(fd);
  size_ = static_cast<uint64_t>(st.st_size);
  return {};
}

Result<void> LogFile::rotate() {
  // No app.log: the last rotation renamed it but could not open a new one (out of fds, say), and
  // we are still writing to the renamed file. Shifting the rotated files again would push one off
  // the end per failed attempt; just try to open app.log again.
  if (::access(path_.c_str(), F_OK) != 0 && errno == ENOENT) return reopen();
  if (options_.keep_files == 0) {
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) return Error::from_errno("unlink " + path_);
  } else {
    // Oldest first, so each rename's target is free or is the file that falls off the end.
    for (unsigned n = options_.keep_files - 1; n >= 1; n--) {
      const std::string from = rotated_path(n);
      const std::string to = rotated_path(n + 1);
      if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
        return Error::from_errno("rename " + from + " to " + to);
      }
    }
    const std::string first = rotated_path(1);
    if (::rename(path_.c_str(), first.c_str()) != 0 && errno != ENOENT) {
      return Error::from_errno("rename " + path_ + " to " + first);
    }
  }
  return reopen();
}

Result<void> LogFile::write_all(std::string_view bytes) {
  const uint64_t size_before = size_;
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_.get(), bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      // A short write (a full disk) may have cut a record: cut the file back to whole records.
      // (On a FIFO or a device this fails harmlessly.)
      if (size_ != size_before) (void)::ftruncate(fd_.get(), static_cast<off_t>(size_before));
      size_ = size_before;
      return Error::from_errno(err, "write " + path_);
    }
    size_ += static_cast<uint64_t>(n);
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<void> LogFile::append(std::string_view records) {
  while (!records.empty()) {
    const uint64_t room = size_ >= options_.max_bytes ? 0 : options_.max_bytes - size_;
    size_t run;  // how many bytes of whole records go into the current file
    if (records.size() <= room) {
      run = records.size();
    } else {
      // The longest run of whole records that fits; then rotate.
      const size_t last_newline = room == 0 ? std::string_view::npos : records.rfind('\n', room - 1);
      if (last_newline != std::string_view::npos) {
        run = last_newline + 1;
      } else if (size_ == 0) {
        // A single record longer than max_bytes (the collector's options rule this out): it gets
        // a file of its own rather than rotating forever.
        run = std::min(records.find('\n'), records.size() - 1) + 1;
      } else {
        run = 0;
      }
    }
    if (run > 0) {
      const std::string_view chunk = records.substr(0, run);
      LBD_TRY(write_all(chunk));
      records_written_ += static_cast<uint64_t>(std::count(chunk.begin(), chunk.end(), '\n'));
      records.remove_prefix(run);
    }
    if (!records.empty()) LBD_TRY(rotate());
  }
  return {};
}

Result<void> make_directories(const std::string& dir, unsigned mode, int group) {
  if (dir.empty()) return Error::from_errno(ENOENT, "mkdir ''");
  // Each prefix ending before a '/', then the whole path.
  for (size_t slash = dir.find('/', 1);; slash = dir.find('/', slash + 1)) {
    const std::string prefix = dir.substr(0, slash);
    if (::mkdir(prefix.c_str(), static_cast<mode_t>(mode)) == 0) {
      if (group >= 0 && ::chown(prefix.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(group)) != 0) {
        return Error::from_errno("chown " + prefix);
      }
    } else if (errno != EEXIST) {
      return Error::from_errno("mkdir " + prefix);
    }
    if (slash == std::string::npos) break;
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return Error::from_errno("stat " + dir);
  if (!S_ISDIR(st.st_mode)) return Error::from_errno(ENOTDIR, dir);
  return {};
}

}  // namespace lbd::logs
