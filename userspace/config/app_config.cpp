#include "config/app_config.h"

#include "common/app_name.h"
#include "sandbox/run_as.h"

#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <tuple>

// toml++ is included here only: Debian ships it compiled (TOML_HEADER_ONLY=0 comes with the
// package's CMake target), so this file is the only one that pays for its headers.
#include <toml++/toml.h>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/address.h"
#include "steer_abi.h"
#include "steering/steering.h"
#include "config/values.h"

namespace lbd::config {

namespace {

constexpr double kMaxSeconds = 86400;
constexpr int64_t kMaxRestarts = 1'000'000;
constexpr int64_t kMaxLogFiles = 1000;
constexpr size_t kMaxFileBytes = 1 << 20;
constexpr uint64_t kMinLogBytes = 4096;  // lbd run's --log-max-size minimum
constexpr size_t kMaxUnixPath = sizeof(sockaddr_un{}.sun_path) - 1;

// --- messages -------------------------------------------------------------------------------------

// Messages are one line whatever the file contains: control characters in echoed values are
// escaped.
std::string one_line(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string in_quotes(std::string_view text) { return "'" + std::string(text) + "'"; }

const char* type_phrase(toml::node_type type) {
  switch (type) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// Where we are while reading: the file, and the scope messages name ("[lbd]", "app 'web'").
struct Where {
  const std::string& path;
  std::string scope;

  [[noreturn]] void fail(int line, const std::string& text) const {
    std::string message = path;
    if (line > 0) message += ":" + std::to_string(line);
    message += ": ";
    if (!scope.empty()) message += scope + ": ";
    message += text;
    throw ConfigError(one_line(message));
  }
  // "key 'workers' must be ..., not a string"
  [[noreturn]] void wrong_type(const toml::node& value, const std::string& key,
                               const std::string& expected) const {
    fail(line_of(value), "key " + in_quotes(key) + " must be " + expected + ", not " +
                             type_phrase(value.type()));
  }
  // "key 'command': each element must be a string, not an integer"
  [[noreturn]] void wrong_element(const toml::node& element, const std::string& key) const {
    fail(line_of(element), "key " + in_quotes(key) + ": each element must be a string, not " +
                               type_phrase(element.type()));
  }
  // "key 'listen': bad listen address ..."
  [[noreturn]] void bad_value(const toml::node& value, const std::string& key,
                              const std::string& problem) const {
    fail(line_of(value), "key " + in_quotes(key) + ": " + problem);
  }
  static int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }
};

// --- the values --------------------------------------------------------------------------------

// A table's entries in file order (toml++ keeps them sorted by key), so the first problem
// reported is the first in the file.
std::vector<std::pair<std::string, const toml::node*>> in_file_order(const toml::table& table) {
  std::vector<std::tuple<toml::source_position, std::string, const toml::node*>> entries;
  for (auto&& [key, value] : table) {
    entries.emplace_back(key.source().begin, std::string(key.str()), &value);
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& pa = std::get<0>(a);
    const auto& pb = std::get<0>(b);
    return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
  });
  std::vector<std::pair<std::string, const toml::node*>> out;
  for (auto& [position, key, value] : entries) out.emplace_back(std::move(key), value);
  return out;
}

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : ", ") + w;
  return out;
}

// Names people bring from elsewhere (PM2, lbd's own flags) for keys that exist here.
const std::map<std::string, std::string> kOtherNames = {
    {"shutdown_timeout", "kill_timeout"}, {"instances", "workers"}, {"args", "command"},
    {"script", "command"}, {"port", "listen"}, {"max_memory_restart", "max_memory"},
    {"exec_mode", "mode"}, {"env_file", "env"}};

// Edit distance, for "did you mean": a misspelt key is the commonest mistake in a config file.
size_t distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); j++) row[j] = j;
  for (size_t i = 1; i <= a.size(); i++) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); j++) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

[[noreturn]] void unknown_key(const Where& where, const toml::node& value, const std::string& key,
                              const std::vector<std::string>& known) {
  std::string text = "key " + in_quotes(key) + " is not known (";
  const std::string* closest = nullptr;
  size_t best = 3;  // at most two edits away
  for (const auto& candidate : known) {
    size_t d = distance(key, candidate);
    if (d < best) {
      best = d;
      closest = &candidate;
    }
  }
  std::string_view last = std::string_view(key).substr(key.rfind('.') + 1);
  if (auto other = kOtherNames.find(std::string(last));
      !closest && other != kOtherNames.end() &&
      std::find(known.begin(), known.end(), other->second) != known.end()) {
    closest = &other->second;
  }
  if (closest) text += "did you mean " + in_quotes(*closest) + "? ";
  where.fail(Where::line_of(value), text + "expected one of: " + join(known) + ")");
}

std::string read_string(const Where& where, const toml::node& value, const std::string& key,
                        const std::string& expected = "a string") {
  const auto* s = value.as_string();
  if (!s) where.wrong_type(value, key, expected);
  const std::string& text = s->get();
  if (text.find('\0') != std::string::npos) {
    where.bad_value(value, key, "must not contain a NUL character");
  }
  return text;
}

std::string read_nonempty_string(const Where& where, const toml::node& value, const std::string& key,
                                 const std::string& expected = "a string") {
  std::string text = read_string(where, value, key, expected);
  if (text.empty()) where.bad_value(value, key, "must not be empty");
  return text;
}

int64_t read_integer(const Where& where, const toml::node& value, const std::string& key,
                     int64_t min, int64_t max, const std::string& expected) {
  const auto* i = value.as_integer();
  if (!i) where.wrong_type(value, key, expected);
  int64_t n = i->get();
  if (n < min || n > max) {
    where.bad_value(value, key, "must be " + expected + ", not " + std::to_string(n));
  }
  return n;
}

unsigned read_count(const Where& where, const toml::node& value, const std::string& key, int64_t min,
                    int64_t max) {
  std::string expected = "a whole number from " + std::to_string(min) + " to " + std::to_string(max);
  return static_cast<unsigned>(read_integer(where, value, key, min, max, expected));
}

std::string format_seconds(double seconds) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), seconds);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(seconds);
}

// Seconds as an integer or a float, in (0, 86400] like every seconds flag.
double read_seconds(const Where& where, const toml::node& value, const std::string& key, bool zero_allowed = false) {
  double seconds = 0;
  if (const auto* i = value.as_integer()) {
    seconds = static_cast<double>(i->get());
  } else if (const auto* f = value.as_floating_point()) {
    seconds = f->get();
  } else {
    where.wrong_type(value, key, "a number of seconds");
  }
  if (zero_allowed && seconds == 0) return 0;
  if (!(seconds > 0 && seconds <= kMaxSeconds)) {  // also catches nan
    where.bad_value(value, key,
                    std::string(zero_allowed ? "must be 0 to 86400" : "must be more than 0 and at most 86400") +
                        " seconds, not " + format_seconds(seconds));
  }
  return seconds;
}

// Why `text` is not a size, or nothing with `bytes` set.
bool read_bool(const Where& where, const toml::node& value, const std::string& key) {
  const auto* b = value.as_boolean();
  if (!b) where.wrong_type(value, key, "true or false");
  return b->get();
}

uint64_t read_size(const Where& where, const toml::node& value, const std::string& key) {
  const char* expected = "a size in bytes (an integer, or a string such as \"512M\")";
  if (const auto* i = value.as_integer()) {
    if (i->get() <= 0) {
      where.bad_value(value, key, "must be more than 0 bytes, not " + std::to_string(i->get()));
    }
    return static_cast<uint64_t>(i->get());
  }
  if (!value.is_string()) where.wrong_type(value, key, expected);
  std::string text = read_string(where, value, key, expected);
  auto bytes = parse_size(text);
  if (!bytes) where.bad_value(value, key, bytes.error().message());
  return *bytes;
}

// One address or several: "0.0.0.0:8080" or ["0.0.0.0:8080", "[::]:8080"]. Returns each element
// with its node, for messages.
std::vector<std::pair<std::string, const toml::node*>> read_string_or_list(
    const Where& where, const toml::node& value, const std::string& key, const std::string& expected) {
  std::vector<std::pair<std::string, const toml::node*>> out;
  if (value.is_string()) {
    out.emplace_back(read_string(where, value, key, expected), &value);
  } else if (const auto* array = value.as_array()) {
    for (const toml::node& element : *array) {
      if (!element.is_string()) where.wrong_element(element, key);
      out.emplace_back(read_string(where, element, key, expected), &element);
    }
  } else {
    where.wrong_type(value, key, expected);
  }
  return out;
}

std::string canonical_address(const Where& where, const toml::node& value, const std::string& key,
                              const std::string& text) {
  auto address = parse_address(text);
  if (address) return address->to_string();
  std::string problem = address.error().message();
  constexpr std::string_view kListen = "bad listen address ";
  if (key != "listen" && problem.compare(0, kListen.size(), kListen) == 0) {
    problem = "bad address " + problem.substr(kListen.size());
  }
  where.bad_value(value, key, problem);
}

// Relative paths are relative to the config file's directory, not to wherever lbd was started.
std::string resolve_path(const std::string& base_dir, const std::string& text) {
  std::filesystem::path path(text);
  if (path.is_relative()) path = (std::filesystem::path(base_dir) / path).lexically_normal();
  std::string out = path.string();
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out.empty()) out = ".";
  // Never let a path read as a flag on lbd run's command line.
  if (out.front() == '-') out = "./" + out;
  return out;
}

bool is_env_name(std::string_view name) {
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front()))) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_';
  });
}

// --- the keys an app and [lbd] share -------------------------------------------------------------

// Keys that [lbd] may set as defaults for every app and an app may set for itself.
const std::vector<std::string> kSharedKeys = {
    "workers", "cpus", "pin", "policy", "mode", "env", "max_memory", "kill_timeout", "ready_delay",
    "ready_timeout", "wait_ready", "max_restarts", "restart_window", "log_level", "user", "allow_root",
    "drain_grace"};


void read_env(const Where& where, const toml::node& value, AppConfig& into) {
  const auto* table = value.as_table();
  if (!table) where.wrong_type(value, "env", "a table of NAME = \"value\"");
  for (const auto& [name, entry] : in_file_order(*table)) {
    std::string key = "env." + name;
    if (!is_env_name(name)) {
      where.fail(Where::line_of(*entry), "key " + in_quotes(key) +
                                             ": an environment variable name is letters, digits "
                                             "and _, not starting with a digit");
    }
    std::string text;
    if (const auto* i = entry->as_integer()) {
      text = std::to_string(i->get());  // PORT = 3000 reads naturally
    } else {
      text = read_string(where, *entry, key, "a string");
    }
    auto same = std::find_if(into.env.begin(), into.env.end(),
                             [&var = name](const auto& kv) { return kv.first == var; });  // clang 14: no captured bindings
    if (same != into.env.end()) {
      same->second = text;  // the app's value replaces [lbd]'s
    } else {
      into.env.emplace_back(name, text);
    }
  }
}

// Reads one of kSharedKeys into `into`; false when `key` is not one of them.
bool read_shared_key(const Where& where, const std::string& key, const toml::node& value,
                     AppConfig& into) {
  if (key == "workers") {
    std::string expected =
        "a whole number from 1 to " + std::to_string(LBD_MAX_SLOTS) + ", \"max\" or \"max-N\" (one per CPU but N)";
    if (value.is_string()) {
      std::string text = read_string(where, value, key, expected);
      const bool max_but_n = text.starts_with("max-") && text.size() > 4 &&
                             std::all_of(text.begin() + 4, text.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (text != "max" && !max_but_n) where.bad_value(value, key, "must be " + expected + ", not \"" + text + "\"");
      into.instances = text;
    } else {
      into.instances = std::to_string(read_integer(where, value, key, 1, LBD_MAX_SLOTS, expected));
    }
  } else if (key == "cpus") {
    std::string text = read_string(where, value, key, "a string such as \"0-3,6\"");
    if (auto cpus = parse_cpu_list(text); !cpus) where.bad_value(value, key, cpus.error().message());
    into.cpus = text;
  } else if (key == "policy") {
    std::string text = read_string(where, value, key, "\"rr\", \"least\" or \"hash\"");
    if (auto policy = parse_policy(text); !policy) where.bad_value(value, key, policy.error().message());
    into.policy = text;
  } else if (key == "mode") {
    std::string text = read_string(where, value, key, "\"bpf\" or \"reuseport\"");
    if (text != "bpf" && text != "reuseport") {
      where.bad_value(value, key, "unknown mode '" + text + "' (expected bpf or reuseport)");
    }
    into.mode = text;
  } else if (key == "env") {
    read_env(where, value, into);
  } else if (key == "max_memory") {
    into.max_memory_bytes = read_size(where, value, key);
  } else if (key == "kill_timeout") {
    into.kill_timeout_s = read_seconds(where, value, key);
  } else if (key == "ready_delay") {
    into.ready_delay_s = read_seconds(where, value, key);
  } else if (key == "ready_timeout") {
    into.ready_timeout_s = read_seconds(where, value, key);
  } else if (key == "drain_grace") {
    into.drain_grace_s = read_seconds(where, value, key, /*zero_allowed=*/true);
  } else if (key == "wait_ready") {
    into.wait_ready = read_bool(where, value, key);
  } else if (key == "pin") {
    into.pin = read_bool(where, value, key);
  } else if (key == "log_level") {
    static const std::vector<std::string> levels = {"trace", "debug", "info", "warn",
                                                    "error", "critical", "off"};
    std::string text = read_string(where, value, key, "a string such as \"info\"");
    if (std::find(levels.begin(), levels.end(), text) == levels.end()) {
      where.bad_value(value, key, "unknown level '" + text + "' (expected " + join(levels) + ")");
    }
    into.log_level = text;
  } else if (key == "user") {
    std::string text = read_nonempty_string(where, value, key);
    if (auto as = resolve_user(text); !as) where.bad_value(value, key, as.error().message());
    into.user = text;
  } else if (key == "allow_root") {
    into.allow_root = read_bool(where, value, key);
  } else if (key == "restart_window") {
    into.restart_window_s = read_seconds(where, value, key);
  } else if (key == "max_restarts") {
    into.max_restarts = read_count(where, value, key, 0, kMaxRestarts);
  } else {
    return false;
  }
  return true;
}

// The log table: { dir = ..., max_size = "10M", files = 5 }; dir only in an app.
void read_log(const Where& where, const toml::node& value, AppConfig& into, bool dir_allowed,
              const std::string& base_dir) {
  const auto* table = value.as_table();
  if (!table) where.wrong_type(value, "log", "a table such as { max_size = \"10M\", files = 5 }");
  std::vector<std::string> known = {"max_size", "files"};
  if (dir_allowed) known.insert(known.begin(), "dir");
  for (const auto& [name, entry] : in_file_order(*table)) {
    std::string key = "log." + name;
    if (name == "dir" && dir_allowed) {
      into.log_dir = resolve_path(base_dir, read_nonempty_string(where, *entry, key));
    } else if (name == "max_size") {
      into.log_max_bytes = read_size(where, *entry, key);
      if (*into.log_max_bytes < kMinLogBytes) {
        where.bad_value(*entry, key, "must be at least 4K, not " + format_size(*into.log_max_bytes));
      }
    } else if (name == "files") {
      into.log_files = read_count(where, *entry, key, 1, kMaxLogFiles);
    } else {
      std::vector<std::string> shown;
      for (const auto& k : known) shown.push_back("log." + k);
      unknown_key(where, *entry, key, shown);
    }
  }
}

// --- [lbd] ----------------------------------------------------------------------------------------

void read_lbd_table(const std::string& path, const toml::node& value, const std::string& base_dir,
                    FileConfig& file, AppConfig& defaults) {
  Where where{path, ""};
  const auto* table = value.as_table();
  if (!table) where.wrong_type(value, "lbd", "a table ([lbd])");
  where.scope = "[lbd]";
  std::vector<std::string> known = {"control_dir", "log_dir"};
  known.insert(known.end(), kSharedKeys.begin(), kSharedKeys.end());
  known.push_back("log");
  for (const auto& [key, entry] : in_file_order(*table)) {
    if (key == "control_dir") {
      file.control_dir = resolve_path(base_dir, read_nonempty_string(where, *entry, key));
    } else if (key == "log_dir") {
      file.log_dir = resolve_path(base_dir, read_nonempty_string(where, *entry, key));
    } else if (key == "log") {
      read_log(where, *entry, defaults, false, base_dir);
    } else if (!read_shared_key(where, key, *entry, defaults)) {
      unknown_key(where, *entry, key, known);
    }
  }
}

// --- [[app]] --------------------------------------------------------------------------------------

void read_command(const Where& where, const toml::node& value, AppConfig& app) {
  const std::string expected = "a program (a string) or a list: program, then arguments";
  const std::string hint = "command = [\"python3\", \"app.py\"]";
  if (value.is_string()) {
    std::string text = read_string(where, value, "command", expected);
    if (text.empty()) where.bad_value(value, "command", "must not be empty (e.g. " + hint + ")");
    if (text.find_first_of(" \t\n") != std::string::npos) {
      where.bad_value(value, "command",
                      "'" + text + "' is one program, not a shell line; write the program and its "
                                   "arguments as a list, e.g. " + hint);
    }
    app.command = text;
    return;
  }
  const auto* array = value.as_array();
  if (!array) where.wrong_type(value, "command", expected);
  if (array->empty()) where.bad_value(value, "command", "must not be empty (e.g. " + hint + ")");
  bool first = true;
  for (const toml::node& element : *array) {
    if (!element.is_string()) where.wrong_element(element, "command");
    std::string text = read_string(where, element, "command");
    if (first) {
      if (text.empty()) where.bad_value(element, "command", "the program name must not be empty");
      app.command = text;
      first = false;
    } else {
      app.args.push_back(text);
    }
  }
}

const std::vector<std::string>& app_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k = {"name", "command", "listen", "cwd"};
    k.insert(k.end(), kSharedKeys.begin(), kSharedKeys.end());
    k.push_back("admin");
    k.push_back("agent");
    k.push_back("log");
    return k;
  }();
  return keys;
}

AppConfig read_app(const std::string& path, const toml::table& table, size_t index,
                   const AppConfig& defaults, const FileConfig& file, const std::string& base_dir) {
  AppConfig app = defaults;
  app.line = Where::line_of(table);
  Where where{path, "app #" + std::to_string(index + 1)};

  // The name first: every later message names the app.
  const toml::node* name = table.get("name");
  if (!name) {
    where.fail(app.line, "key 'name' is missing (every app needs one, e.g. name = \"web\")");
  }
  app.name = read_nonempty_string(where, *name, "name");
  if (!is_app_name(app.name)) {
    where.bad_value(*name, "name", "'" + app.name + "' is not a valid app name (" + kAppNameRule + ")");
  }
  where.scope = "app " + in_quotes(app.name);
  std::string socket = control_socket_path(app, file);
  if (socket.size() > kMaxUnixPath) {
    where.bad_value(*name, "name",
                    "its control socket " + socket + " is longer than a Unix socket path may be (" +
                        std::to_string(kMaxUnixPath) + " bytes); shorten the name or [lbd] control_dir");
  }

  std::set<std::string> addresses;
  for (const auto& [key, entry] : in_file_order(table)) {
    if (key == "name") continue;
    if (key == "command") {
      read_command(where, *entry, app);
    } else if (key == "listen") {
      auto list = read_string_or_list(where, *entry, key,
                                      "an address (\"0.0.0.0:8080\") or a list of them");
      if (list.empty()) where.bad_value(*entry, key, "must list at least one address");
      if (list.size() > LBD_MAX_GROUPS) {
        where.bad_value(*entry, key, "at most " + std::to_string(LBD_MAX_GROUPS) + " addresses");
      }
      for (const auto& [text, node] : list) {
        std::string address = canonical_address(where, *node, key, text);
        if (!addresses.insert(address).second) {
          where.bad_value(*node, key, address + " is listed twice");
        }
        app.listen.push_back(address);
      }
    } else if (key == "cwd") {
      app.cwd = resolve_path(base_dir, read_nonempty_string(where, *entry, key));
    } else if (key == "admin") {
      std::string text = read_string(where, *entry, key, "an address such as \"127.0.0.1:9180\"");
      app.admin = canonical_address(where, *entry, key, text);
    } else if (key == "agent") {
      std::string text = read_string(where, *entry, key, "an address such as \"0.0.0.0:9181\"");
      app.agent = canonical_address(where, *entry, key, text);
    } else if (key == "log") {
      read_log(where, *entry, app, true, base_dir);
    } else if (!read_shared_key(where, key, *entry, app)) {
      unknown_key(where, *entry, key, app_keys());
    }
  }

  if (app.command.empty()) {
    where.fail(app.line, "key 'command' is missing (the program to run, e.g. command = [\"node\", "
                         "\"server.js\"])");
  }
  if (app.listen.empty()) {
    where.fail(app.line, "key 'listen' is missing (the address to serve, e.g. listen = "
                         "\"0.0.0.0:8080\")");
  }
  if (app.cwd.empty()) app.cwd = resolve_path(base_dir, ".");
  return app;
}

// Each app is its own reuseport group: two apps on one port would bind each other's group (or
// fail), so a port (other than 0, "pick a free one") belongs to one app. An app's admin endpoint
// takes a port too.
void check_ports(const std::string& path, const toml::table& root, const FileConfig& file) {
  struct Owner {
    size_t app;
    std::string key;  // listen, admin or agent
    int line;
  };
  std::map<uint16_t, Owner> owners;
  const auto* apps = root.get_as<toml::array>("app");
  for (size_t i = 0; i < file.apps.size(); i++) {
    const AppConfig& app = file.apps[i];
    Where where{path, "app " + in_quotes(app.name)};
    const auto& table = *apps->get(i)->as_table();
    auto claim = [&](const std::string& text, const std::string& key, const toml::node& node) {
      auto address = parse_address(text);  // checked when the app was read
      if (!address || address->port() == 0) return;
      const uint16_t port = address->port();
      auto [it, inserted] = owners.emplace(port, Owner{i, key, Where::line_of(node)});
      if (inserted) return;
      const Owner& other = it->second;
      if (other.app == i && other.key == key) return;  // the same group on IPv4 and IPv6
      std::string whose = other.app == i ? "this app's " + other.key
                                         : "app " + in_quotes(file.apps[other.app].name);
      where.bad_value(node, key, "port " + std::to_string(port) + " is already used by " + whose +
                                     " (line " + std::to_string(other.line) +
                                     "); each app needs its own port");
    };
    const toml::node* listen = table.get("listen");
    if (const auto* array = listen->as_array()) {
      size_t k = 0;
      for (const toml::node& element : *array) claim(app.listen[k++], "listen", element);
    } else {
      claim(app.listen[0], "listen", *listen);
    }
    if (!app.admin.empty()) claim(app.admin, "admin", *table.get("admin"));
    if (!app.agent.empty()) claim(app.agent, "agent", *table.get("agent"));
  }
}

std::string syntax_error(const std::string& path, const toml::parse_error& e) {
  std::string description(e.description());
  constexpr std::string_view kPrefix = "Error while parsing ";
  if (description.compare(0, kPrefix.size(), kPrefix) == 0) {
    description = "syntax error in " + description.substr(kPrefix.size());
  } else {
    description = "syntax error: " + description;
  }
  return one_line(path + ":" + std::to_string(e.source().begin.line) + ":" +
                  std::to_string(e.source().begin.column) + ": " + description);
}

}  // namespace

// --- the interface --------------------------------------------------------------------------------

FileConfig parse_config(std::string_view text, const std::string& path,
                        std::optional<std::string> base_dir) {
  std::string base = base_dir ? *base_dir : std::filesystem::path(path).parent_path().string();
  if (base.empty()) base = ".";

  toml::table root;
  try {
    root = toml::parse(text, std::string_view(path));
  } catch (const toml::parse_error& e) {
    throw ConfigError(syntax_error(path, e));
  }

  FileConfig file;
  AppConfig defaults;
  Where top{path, ""};
  for (const auto& [key, value] : in_file_order(root)) {
    if (key != "lbd" && key != "app") unknown_key(top, *value, key, {"lbd", "app"});
  }
  if (const toml::node* lbd = root.get("lbd")) read_lbd_table(path, *lbd, base, file, defaults);

  const toml::node* apps = root.get("app");
  const std::string add_one = "add at least one [[app]] table with a name, a command and listen";
  if (!apps) top.fail(0, "key 'app' is missing: no apps to run; " + add_one);
  if (apps->is_table()) {
    top.fail(Where::line_of(*apps),
             "key 'app' must be an array of tables: write [[app]] (two brackets) for each app");
  }
  const auto* array = apps->as_array();
  if (!array) top.wrong_type(*apps, "app", "an array of tables ([[app]])");
  if (array->empty()) top.fail(Where::line_of(*apps), "key 'app' is empty: no apps to run; " + add_one);
  for (const toml::node& element : *array) {
    if (!element.is_table()) {
      top.fail(Where::line_of(element), "key 'app': each app must be a table ([[app]]), not " +
                                            std::string(type_phrase(element.type())));
    }
  }

  std::map<std::string, int> names;  // name -> line, for duplicates
  size_t index = 0;
  for (const toml::node& node : *array) {
    AppConfig app = read_app(path, *node.as_table(), index, defaults, file, base);
    const toml::node& name_node = *node.as_table()->get("name");
    auto [it, inserted] = names.emplace(app.name, Where::line_of(name_node));
    if (!inserted) {
      Where{path, "app " + in_quotes(app.name)}.bad_value(
          name_node, "name",
          "'" + app.name + "' is already the name of the app at line " + std::to_string(it->second) +
              "; app names must be unique");
    }
    file.apps.push_back(std::move(app));
    index++;
  }
  check_ports(path, root, file);
  return file;
}

FileConfig load_config_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    throw ConfigError(one_line(path + ": cannot read the config file: " + std::strerror(errno)));
  }
  std::string text;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      throw ConfigError(one_line(path + ": cannot read the config file: " + std::strerror(err)));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxFileBytes) {
      throw ConfigError(one_line(path + ": too large for a config file (more than 1 MiB)"));
    }
  }
  fd.reset();
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  std::string base = ec ? std::filesystem::path(path).parent_path().string()
                        : absolute.parent_path().string();
  return parse_config(text, path, base);
}

std::string control_socket_path(const AppConfig& app, const FileConfig& file) {
  std::string dir = file.control_dir.empty() ? kDefaultControlDir : file.control_dir;
  if (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir + "/" + app.name + ".sock";
}

std::string app_log_dir(const AppConfig& app, const FileConfig& file) {
  return app.log_dir.empty() ? file.log_dir : app.log_dir;
}

std::vector<std::string> lbd_run_arguments(const AppConfig& app, const FileConfig& file) {
  std::vector<std::string> argv = {"run", "--name", app.name};
  auto flag = [&](const char* name, const std::string& value) {
    argv.push_back(name);
    argv.push_back(value);
  };
  if (!app.instances.empty()) flag("--instances", app.instances);
  for (const auto& address : app.listen) flag("--listen", address);
  if (!app.cpus.empty()) flag("--cpus", app.cpus);
  if (!app.pin.value_or(true)) argv.push_back("--no-pin");
  if (!app.policy.empty()) flag("--policy", app.policy);
  if (!app.mode.empty()) flag("--mode", app.mode);
  for (const auto& [name, value] : app.env) flag("--env", name + "=" + value);
  if (!app.cwd.empty()) flag("--cwd", app.cwd);
  if (app.max_memory_bytes) flag("--max-memory", format_size(*app.max_memory_bytes));
  if (app.kill_timeout_s) flag("--kill-timeout", format_seconds(*app.kill_timeout_s));
  if (app.ready_delay_s) flag("--ready-delay", format_seconds(*app.ready_delay_s));
  if (app.ready_timeout_s) flag("--ready-timeout", format_seconds(*app.ready_timeout_s));
  if (app.wait_ready.value_or(false)) argv.push_back("--wait-ready");
  if (app.max_restarts) flag("--max-restarts", std::to_string(*app.max_restarts));
  if (app.restart_window_s) flag("--restart-window", format_seconds(*app.restart_window_s));
  if (std::string dir = app_log_dir(app, file); !dir.empty()) flag("--log-dir", dir);
  if (app.log_max_bytes) flag("--log-max-size", format_size(*app.log_max_bytes));
  if (app.log_files) flag("--log-files", std::to_string(*app.log_files));
  if (!app.log_level.empty()) flag("--log-level", app.log_level);
  if (!app.user.empty()) flag("--user", app.user);
  if (app.allow_root.value_or(false)) argv.push_back("--allow-root");
  flag("--control", control_socket_path(app, file));
  if (!app.admin.empty()) flag("--admin", app.admin);
  if (!app.agent.empty()) flag("--agent", app.agent);
  if (app.drain_grace_s) flag("--drain-grace", format_seconds(*app.drain_grace_s));
  argv.push_back("--");
  argv.push_back(app.command);
  argv.insert(argv.end(), app.args.begin(), app.args.end());
  return argv;
}

}  // namespace lbd::config
