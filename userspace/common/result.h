// lbd's error policy, written down once.
//
// - Every call that touches the kernel returns Result<T>: either a value or an Error that carries
//   the std::error_code the kernel gave and a short context ("bind 0.0.0.0:8080"). No bare bools,
//   no magic return codes, no errno read three calls later.
// - Exceptions only at start-up, for configuration and arguments (ConfigError), where the only
//   thing to do is print one line and exit non-zero. Nothing on a data path throws.
// - EBADF and friends are bugs, not conditions: they are reported like any error, with context, and
//   the caller treats them as fatal for the object involved.
// - Library code never calls exit(); only main() decides how the process ends.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace lbd {

class Error {
 public:
  Error(std::error_code code, std::string context) : code_(code), context_(std::move(context)) {}

  // An error from errno as the failed call left it.
  static Error from_errno(std::string context) { return from_errno(errno, std::move(context)); }
  static Error from_errno(int err, std::string context) {
    return Error(std::error_code(err, std::system_category()), std::move(context));
  }

  // A value that is wrong (bad text, a damaged record), with no system error behind it: its
  // message is the description alone.
  static Error invalid(std::string description) { return Error(std::error_code(), std::move(description)); }

  const std::error_code& code() const { return code_; }
  const std::string& context() const { return context_; }
  // "context: message", the one-line form every log and CLI error uses.
  std::string message() const {
    if (!code_) return context_;
    return context_.empty() ? code_.message() : context_ + ": " + code_.message();
  }
  // Prefixes more context: "start worker 2: bind 0.0.0.0:80: permission denied".
  Error wrap(const std::string& outer) const& { return Error(code_, outer + ": " + context_); }

 private:
  std::error_code code_;
  std::string context_;
};

// A value or an Error. Deliberately small: check with `if (!r)`, read with `*r` / `r->`, get the
// error with `r.error()`.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}

  explicit operator bool() const { return state_.index() == 0; }
  bool ok() const { return state_.index() == 0; }

  T& operator*() & { return std::get<0>(state_); }
  const T& operator*() const& { return std::get<0>(state_); }
  T&& operator*() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &std::get<0>(state_); }
  const T* operator->() const { return &std::get<0>(state_); }

  const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}

  explicit operator bool() const { return ok_; }
  bool ok() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{std::error_code(), std::string()};
  bool ok_ = true;
};

// Thrown only while reading arguments and configuration at start-up; main() prints what() as one
// line and exits with status 2.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace lbd

// Propagates an error out of a function returning Result<...>.
#define LBD_TRY(expr)                          \
  do {                                         \
    auto lbd_try_result_ = (expr);             \
    if (!lbd_try_result_) return lbd_try_result_.error(); \
  } while (0)
