// A Node.js example of examples/ (its own package.json and package-lock.json) ready to run: its
// files and its npm packages in a scratch folder under /var/tmp, kept between runs the way
// bench/compare keeps PM2, so the suite downloads a package only when the lock file changes.
//
//   NpmExample app = prepare_npm_example("sessions");
//   if (!app.skip_reason.empty()) GTEST_SKIP() << app.skip_reason;
//   ASSERT_TRUE(app.problem.empty()) << app.problem;
//   start_program({...}, {"node", app.path("server.js")});
//
// Without node or npm on the PATH the test skips; an npm install that fails (no registry, a
// version that is gone) is a failure: CI has the registry, and must say when it cannot install.
// The scratch folder is readable by everyone: the programs lbd starts run as nobody, and a clone
// under /root is not readable by them. It must be ours alone (see unsafe_folder): one that another
// user made or can write in fails the test, which says to remove it.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/unique_fd.h"
#include "support/deadline.h"
#include "support/exec_test.h"
#include "support/lbctl.h"

namespace lbd::test {

struct NpmExample {
  std::string dir;          // /var/tmp/lbd-examples/NAME
  std::string skip_reason;  // set when node or npm is missing
  std::string problem;      // set when the install failed

  std::string path(const std::string& name) const { return dir + "/" + name; }
};

namespace npm_detail {

inline constexpr char kScratch[] = "/var/tmp/lbd-examples";
// One install, however slow the registry: bounded, and it fails rather than hangs.
inline constexpr auto kInstallBound = std::chrono::seconds(90);

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return in ? text.str() : std::string();
}

// Writes `path` whole or not at all (a copy beside it, then rename()): a test running beside this
// one may be starting node on the same file.
inline bool write_file_atomically(const std::string& path, const std::string& contents) {
  const std::string temporary = path + ".new." + std::to_string(getpid());
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << contents;
    if (!out.flush()) return false;
  }
  std::filesystem::permissions(temporary, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
                                              std::filesystem::perms::group_read | std::filesystem::perms::others_read);
  return std::rename(temporary.c_str(), path.c_str()) == 0;
}

// Makes `path` (mode 0755: umask can only take bits away) unless it exists, then "" if it is a
// folder only this process's user controls, or why not. The tests run `npm ci` and node from it,
// as root: a folder (or a symlink) that another local user made first, or may write in, would let
// that user choose the code they run. lstat, so a symlink is refused rather than followed; and
// /var/tmp is sticky, so nobody else can rename or replace a folder of ours once checked.
inline std::string unsafe_folder(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return "cannot create " + path + ": " + std::strerror(errno);
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "cannot lstat " + path + ": " + std::strerror(errno);
  std::string why;
  if (S_ISLNK(st.st_mode)) why = "is a symlink";
  else if (!S_ISDIR(st.st_mode)) why = "is not a directory";
  else if (st.st_uid != geteuid()) why = "is owned by uid " + std::to_string(st.st_uid) + ", not " + std::to_string(geteuid());
  else if (st.st_mode & (S_IWGRP | S_IWOTH)) why = "is writable by its group or by others";
  if (why.empty()) return "";
  return std::string(path) + " " + why + ": whoever controls it controls the code these tests run; remove it (rm -rf " +
         kScratch + ") and run again";
}

// The end of what a command printed, for a failure message.
inline std::string tail(const std::string& text, size_t bytes = 2000) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

}  // namespace npm_detail

// The full path of `program` as the shell finds it on the PATH ("" if it does not): for
// LbdProcess, which executes a path.
inline std::string path_of(const std::string& program) {
  CommandResult r = run_command({"/bin/sh", "-c", "command -v \"$0\"", program}, after(std::chrono::seconds(5)));
  return r.exited(0) ? r.out.substr(0, r.out.find('\n')) : std::string();
}

// examples/NAME's files (not node_modules) copied into /var/tmp/lbd-examples/NAME, and `npm ci`
// there unless what is installed came from the same package-lock.json. Tests running side by side
// take turns on one example (a lock file beside its folder).
inline NpmExample prepare_npm_example(const std::string& name) {
  namespace fs = std::filesystem;
  using namespace npm_detail;
  NpmExample app;
  app.dir = std::string(kScratch) + "/" + name;
  if (!on_path("node") || !on_path("npm")) {
    app.skip_reason = "needs Node.js and npm (scripts/install-deps.sh installs them)";
    return app;
  }
  const fs::perms everyone_reads = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec;
  for (const std::string& folder : {std::string(kScratch), app.dir}) {
    app.problem = unsafe_folder(folder);
    if (!app.problem.empty()) return app;
  }
  std::error_code error;
  fs::permissions(kScratch, everyone_reads, error);
  fs::permissions(app.dir, everyone_reads, error);

  const std::string lock_path = std::string(kScratch) + "/" + name + ".lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  const Deadline give_up = after(kInstallBound + std::chrono::seconds(30));
  if (!lock || !eventually(give_up, [&] { return flock(lock.get(), LOCK_EX | LOCK_NB) == 0; }, 50ms)) {
    app.problem = "cannot lock " + lock_path + " (another test installing for over " +
                  std::to_string(kInstallBound.count()) + " s?)";
    return app;
  }

  const std::string source = std::string(LBD_SOURCE_DIR) + "/examples/" + name;
  for (const auto& entry : fs::directory_iterator(source, error)) {
    if (!entry.is_regular_file()) continue;  // node_modules of a run by hand stays where it is
    const std::string file = entry.path().filename().string();
    if (!write_file_atomically(app.path(file), read_file(entry.path().string()))) {
      app.problem = "cannot copy " + entry.path().string() + " to " + app.dir;
      return app;
    }
  }
  if (error) {
    app.problem = "cannot read " + source + ": " + error.message();
    return app;
  }

  // Installed already, from this very lock file: nothing to fetch.
  const std::string wanted = read_file(app.path("package-lock.json"));
  const std::string stamp = app.path(".installed-from-package-lock.json");
  if (!wanted.empty() && read_file(stamp) == wanted && fs::exists(app.path("node_modules/.package-lock.json"))) {
    return app;
  }
  fs::remove(stamp, error);
  CommandResult install = run_command({"/bin/sh", "-c",
                                       "exec npm ci --prefix \"$0\" --no-audit --no-fund --loglevel=error "
                                       "--no-update-notifier",
                                       app.dir},
                                      after(kInstallBound));
  if (!install.exited(0)) {
    app.problem = "npm ci in " + app.dir + " failed (" + (install.timed_out ? "no answer in " +
                  std::to_string(kInstallBound.count()) + " s" : install.status.to_string()) +
                  "); is the npm registry reachable?\n" + tail(install.err) + tail(install.out);
    return app;
  }
  if (!write_file_atomically(stamp, wanted)) app.problem = "cannot write " + stamp;
  return app;
}

}  // namespace lbd::test
