#include "supervisor/state_record.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

namespace lbd {

std::string state_record_path(const std::string& control_path) {
  if (control_path.empty()) return {};
  std::string path = control_path;
  if (path.ends_with(".sock")) path.resize(path.size() - 5);
  return path + ".state";
}

std::string steering_pin_dir(const std::string& record_path) {
  // One directory per record, named by a hash of its path: lbd's apps and test runs side by side
  // each have their own. FNV-1a, 64 bits.
  uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : record_path) hash = (hash ^ c) * 1099511628211ull;
  char name[64];
  snprintf(name, sizeof(name), "/sys/fs/bpf/lbd-%016llx", static_cast<unsigned long long>(hash));
  return name;
}

std::string boot_id() {
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(file, id);
  return id;
}

std::optional<uint64_t> process_start_time(pid_t pid) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(file, stat)) return std::nullopt;
  // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  // Fields 3 .. 21 come first; start time is field 22.
  for (int i = 3; i <= 21; i++) {
    if (!(fields >> field)) return std::nullopt;
  }
  uint64_t start = 0;
  if (!(fields >> start)) return std::nullopt;
  return start;
}

bool process_runs(pid_t pid, uint64_t start_time) {
  if (pid <= 0 || process_start_time(pid) != start_time) return false;
  std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(file, stat);
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z' && stat[close + 2] != 'X';
}

Result<void> write_state_record(const std::string& path, const std::string& text) {
  const std::string temporary = path + ".new";
  UniqueFd fd(open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return Error::from_errno("write " + temporary);
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd.get(), text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno("write " + temporary);
    written += static_cast<size_t>(n);
  }
  fd.reset();
  if (rename(temporary.c_str(), path.c_str()) != 0) return Error::from_errno("rename " + temporary + " to " + path);
  return {};
}

StateRecordWriter::StateRecordWriter(std::string path)
    : path_(std::move(path)), thread_([this](std::stop_token stop) { run(stop); }) {}

StateRecordWriter::~StateRecordWriter() {
  thread_.request_stop();
  changed_.notify_all();
}

uint64_t StateRecordWriter::submit(std::string text) {
  const uint64_t version = next_version_++;
  {
    std::lock_guard lock(mutex_);
    pending_ = std::move(text);
    pending_version_ = version;
  }
  changed_.notify_all();
  return version;
}

bool StateRecordWriter::wait_written(uint64_t version, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return written_version_ >= version || failed_version_ >= version; });
  return written_version_ >= version;
}

void StateRecordWriter::remove() {
  {
    std::unique_lock lock(mutex_);
    pending_version_ = 0;  // not to be written
    pending_.clear();
  }
  // A write in progress holds no lock while it writes: stop the thread (it finishes that write)
  // and only then remove the file, which nothing can write again.
  thread_.request_stop();
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
  unlink(path_.c_str());
}

std::optional<Error> StateRecordWriter::take_error() {
  std::lock_guard lock(mutex_);
  return std::exchange(error_, std::nullopt);
}

void StateRecordWriter::run(std::stop_token stop) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);  // the supervisor takes its signals on a signalfd
  std::unique_lock lock(mutex_);
  while (true) {
    changed_.wait(lock, stop, [&] { return pending_version_ != 0; });
    if (pending_version_ == 0) return;  // stopped with nothing pending
    const std::string text = std::move(pending_);
    const uint64_t version = std::exchange(pending_version_, 0);
    lock.unlock();
    auto written = write_state_record(path_, text);
    lock.lock();
    if (written) {
      written_version_ = version;
    } else {
      failed_version_ = version;
      error_ = written.error();
    }
    changed_.notify_all();
  }
}

Result<std::optional<nlohmann::json>> read_state_record(const std::string& path) {
  std::ifstream file(path);
  if (!file) return std::optional<nlohmann::json>();
  std::stringstream text;
  text << file.rdbuf();
  nlohmann::json record = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (record.is_discarded()) return Error::invalid("the state record " + path + " is not JSON");
  return std::optional<nlohmann::json>(std::move(record));
}

FdRef fd_ref(int fd, int child_fd) {
  FdRef ref{fd, child_fd};
  struct stat st{};
  if (fd >= 0 && fstat(fd, &st) == 0) {
    ref.device = st.st_dev;
    ref.inode = st.st_ino;
  }
  return ref;
}

nlohmann::json to_json(const FdRef& ref) {
  return nlohmann::json::array({ref.supervisor, ref.child, ref.device, ref.inode});
}

FdRef fd_ref_from_json(const nlohmann::json& j) {
  if (!j.is_array() || j.size() != 4) return {};
  for (const auto& n : j) {
    if (!n.is_number_integer()) return {};
  }
  return FdRef{j[0].get<int>(), j[1].get<int>(), j[2].get<uint64_t>(), j[3].get<uint64_t>()};
}

Result<UniqueFd> copy_fd_of(int pidfd, int fd) {
  // The system call itself: Debian 12's glibc declares the wrapper in a header C++ cannot link
  // against. The copy is close-on-exec.
  UniqueFd copy(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0)));
  if (!copy) return Error::from_errno("pidfd_getfd " + std::to_string(fd));
  return copy;
}

namespace {

// The copy is the file the record names.
Result<UniqueFd> checked(Result<UniqueFd> copy, const FdRef& ref) {
  if (!copy) return copy;
  struct stat st{};
  if (fstat(copy->get(), &st) != 0) return Error::from_errno("fstat a taken descriptor");
  if (ref.inode == 0 || st.st_dev != ref.device || st.st_ino != ref.inode) {
    return Error::from_errno(ESTALE, "descriptor " + std::to_string(ref.child) + " is another file now");
  }
  return copy;
}

// The number under which `pid` keeps the open file (device, inode) now, if it does.
std::optional<int> find_fd(pid_t pid, uint64_t device, uint64_t inode) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::unique_ptr<DIR, int (*)(DIR*)> entries(opendir(dir.c_str()), closedir);
  if (!entries) return std::nullopt;
  while (dirent* entry = readdir(entries.get())) {
    struct stat st{};
    if (entry->d_name[0] == '.' || stat((dir + "/" + entry->d_name).c_str(), &st) != 0) continue;
    if (st.st_dev == device && st.st_ino == inode) return atoi(entry->d_name);
  }
  return std::nullopt;
}

}  // namespace

Result<UniqueFd> FdTaker::take(const FdRef& ref, int holder, pid_t holder_pid) const {
  Result<UniqueFd> taken = Error::from_errno(ENOENT, "a descriptor the record names nowhere");
  if (predecessor_ >= 0 && ref.supervisor >= 0) {
    taken = checked(copy_fd_of(predecessor_, ref.supervisor), ref);
    if (taken) return taken;
  }
  if (holder < 0 || ref.inode == 0) return taken;
  if (ref.child >= 0) {
    taken = checked(copy_fd_of(holder, ref.child), ref);
    if (taken) return taken;
  }
  if (holder_pid > 0) {
    if (auto moved = find_fd(holder_pid, ref.device, ref.inode)) taken = checked(copy_fd_of(holder, *moved), ref);
  }
  return taken;
}

}  // namespace lbd
