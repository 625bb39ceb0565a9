// A directory of its own under /tmp for one test (control sockets, copies of binaries), removed with
// everything in it when the test ends.
//
//   TempDir dir;
//   std::string socket = dir.path("lbd.sock");   // "/tmp/lbd-test-a1B2c3/lbd.sock"
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace lbd::test {

class TempDir {
 public:
  TempDir() {
    // Short on purpose: a Unix socket path must fit in 108 bytes.
    char name[] = "/tmp/lbd-test-XXXXXX";
    if (!mkdtemp(name)) throw std::runtime_error("mkdtemp failed");
    root_ = name;
    // Reachable by other users: a test run as root starts programs as nobody, which must be
    // able to execute the scripts and copies of binaries a test puts here.
    std::filesystem::permissions(root_, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                            std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                            std::filesystem::perms::others_exec);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(root_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return root_; }
  std::string path(const std::string& name) const { return root_ + "/" + name; }

 private:
  std::string root_;
};

}  // namespace lbd::test
