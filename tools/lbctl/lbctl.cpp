// lbctl: the operator's command line for a running lbd. It speaks only the control protocol
// (userspace/control/protocol.h) over lbd's Unix socket.
//
//   lbctl status [--json]                       the workers, their load, the policy
//   lbctl drain <slot>|--all [--timeout S] [--wait]
//   lbctl undrain <slot>|--all
//   lbctl reload [--parallel K] [--timeout S]   replace every worker with a fresh one, slot by slot
//   lbctl restart <slot> [--timeout S]
//   lbctl scale N
//   lbctl policy rr|least|hash
//   lbctl stop
//
// Exit status: 0 on success; 1 with a one-line reason when lbd refuses or fails (no such slot,
// timed out, ...) or cannot be reached; 2 for a usage error. Long operations print a line as each
// worker changes. The socket is --control, else $LBD_CONTROL, else /run/lbd/lbd.sock.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "common/unique_fd.h"
#include "control/protocol.h"

namespace {

using lbd::UniqueFd;
using lbd::control::Reply;
using lbd::control::Request;
using lbd::control::Verb;
using nlohmann::json;

[[noreturn]] void fail(const std::string& message) {
  std::cerr << "lbctl: " << message << "\n";
  std::exit(1);
}

UniqueFd connect_to(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) fail("control socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) fail(std::string("socket: ") + strerror(errno));
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == ENOENT || errno == ECONNREFUSED) fail("lbd is not running (no control socket at " + path + ")");
    if (errno == EACCES || errno == EPERM) {
      fail("permission denied: " + path + " (run as root or as the user lbd runs as)");
    }
    fail("cannot connect to " + path + ": " + strerror(errno));
  }
  return fd;
}

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "K", "M", "G", "T"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    unit++;
  }
  char text[32];
  snprintf(text, sizeof(text), unit == 0 ? "%.0f%s" : "%.1f%s", value, units[unit]);
  return text;
}

std::string human_duration(double seconds) {
  auto s = static_cast<long>(seconds);
  char text[32];
  if (s < 60) snprintf(text, sizeof(text), "%lds", s);
  else if (s < 3600) snprintf(text, sizeof(text), "%ldm%02lds", s / 60, s % 60);
  else if (s < 86400) snprintf(text, sizeof(text), "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  else snprintf(text, sizeof(text), "%ldd%02ldh", s / 86400, (s % 86400) / 3600);
  return text;
}

std::string field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

void print_status(const json& status) {
  const json& lbd = status.at("lbd");
  std::string listen;
  for (const auto& a : lbd.at("listen")) listen += (listen.empty() ? "" : ",") + a.get<std::string>();
  printf("lbd %s  pid %s  mode %s  policy %s  up %s  listen %s  reloads %s\n",
         field(lbd, "version").c_str(), field(lbd, "pid").c_str(), field(lbd, "mode").c_str(),
         field(lbd, "policy").c_str(), human_duration(lbd.value("uptime_s", 0.0)).c_str(),
         listen.c_str(), field(lbd, "reloads").c_str());
  if (lbd.contains("operation") && !lbd["operation"].is_null()) {
    printf("in progress: %s\n", lbd["operation"].get<std::string>().c_str());
  }
  printf("%-4s  %-8s  %-3s  %-8s  %7s  %9s  %10s  %7s  %5s  %8s  %7s\n", "SLOT", "PID", "CPU", "STATE",
         "CONNS", "ACCEPTED", "REQUESTS", "RSS", "CPU%", "RESTARTS", "UPTIME");
  for (const auto& w : status.at("workers")) {
    const int cpu = w.value("cpu", -1);
    char cpu_percent[16] = "-";
    if (w.contains("cpu_percent")) snprintf(cpu_percent, sizeof(cpu_percent), "%.1f", w["cpu_percent"].get<double>());
    printf("%-4s  %-8s  %-3s  %-8s  %7s  %9s  %10s  %7s  %5s  %8s  %7s\n", field(w, "slot").c_str(),
           field(w, "pid").c_str(), cpu >= 0 ? std::to_string(cpu).c_str() : "any",
           field(w, "state").c_str(), field(w, "connections").c_str(), field(w, "accepted").c_str(),
           field(w, "requests").c_str(),
           w.contains("rss_bytes") ? human_bytes(w["rss_bytes"].get<uint64_t>()).c_str() : "-",
           cpu_percent, field(w, "restarts").c_str(),
           w.contains("uptime_s") ? human_duration(w["uptime_s"].get<double>()).c_str() : "-");
  }
}

// Sends the request, prints progress as it comes, returns the final result (or exits).
json call_lbd(const std::string& path, const Request& request) {
  UniqueFd fd = connect_to(path);
  const std::string line = lbd::control::encode_request(request);
  std::string send_error;
  if (send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    // lbd may have answered and closed before reading (a refusal): its answer is still there.
    send_error = std::string("cannot send the request: ") + strerror(errno);
  }
  std::string buffer;
  char chunk[4096];
  while (true) {
    size_t newline;
    while ((newline = buffer.find('\n')) != std::string::npos) {
      auto reply = lbd::control::parse_reply(buffer.substr(0, newline));
      buffer.erase(0, newline + 1);
      if (!reply) fail(reply.error().message());
      switch (reply->kind) {
        case Reply::Kind::kProgress:
          std::cout << reply->message << std::endl;
          break;
        case Reply::Kind::kOk:
          return reply->result;
        case Reply::Kind::kError:
          fail(reply->message);
      }
    }
    ssize_t n = recv(fd.get(), chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer.append(chunk, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      fail(!send_error.empty() ? send_error : "lbd closed the connection without an answer (did it stop?)");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lbctl: control a running lbd (drain, reload, scale, status)", "lbctl"};
  app.require_subcommand(1);
  const char* env = getenv("LBD_CONTROL");
  std::string path = env && *env ? env : lbd::control::kDefaultSocketPath;
  app.add_option("-s,--control", path, "lbd's control socket ($LBD_CONTROL)")->capture_default_str();

  Request request;
  bool json_output = false;
  int slot = -1;
  double timeout = 0;
  int parallel = 1;
  int workers = 0;

  auto* status = app.add_subcommand("status", "Show every worker: pid, state, connections, requests, memory, CPU");
  status->add_flag("--json", json_output, "Print the raw JSON");

  auto* drain = app.add_subcommand("drain", "Stop sending new connections to a worker; it finishes and exits");
  drain->add_option("slot", slot, "The worker's slot");
  drain->add_flag("--all", request.all, "Every worker (lbd keeps running, serving nothing)");
  drain->add_option("--timeout", timeout, "Seconds to let connections finish (default: lbd's --shutdown-timeout)");
  drain->add_flag("--wait", request.wait, "Return once the workers have exited");

  auto* undrain = app.add_subcommand("undrain", "Start a worker in a drained slot again");
  undrain->add_option("slot", slot, "The worker's slot");
  undrain->add_flag("--all", request.all, "Every drained slot");

  auto* reload = app.add_subcommand("reload", "Replace every worker with a fresh one, slot by slot, without failing a request");
  reload->add_option("--parallel", parallel, "Slots replaced at once")->capture_default_str();
  reload->add_option("--timeout", timeout, "Seconds a new worker has to become ready (default 30)");

  auto* restart = app.add_subcommand("restart", "Replace one worker with a fresh one");
  restart->add_option("slot", slot, "The worker's slot")->required();
  restart->add_option("--timeout", timeout, "Seconds the new worker has to become ready (default 30)");

  auto* scale = app.add_subcommand("scale", "Run N workers: add slots, or drain the highest ones");
  scale->add_option("workers", workers, "Number of workers")->required();

  auto* policy = app.add_subcommand("policy", "Change how new connections are steered: rr, least or hash");
  policy->add_option("policy", request.policy, "rr, least or hash")->required();

  auto* stop = app.add_subcommand("stop", "Stop lbd gracefully (like SIGTERM)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, or the usage error
    return code == 0 ? 0 : 2;
  }

  if (*status) request.verb = Verb::kStatus;
  if (*drain) request.verb = Verb::kDrain;
  if (*undrain) request.verb = Verb::kUndrain;
  if (*reload) request.verb = Verb::kReload;
  if (*restart) request.verb = Verb::kRestart;
  if (*scale) request.verb = Verb::kScale;
  if (*policy) request.verb = Verb::kPolicy;
  if (*stop) request.verb = Verb::kStop;
  if (slot >= 0) request.slot = static_cast<uint32_t>(slot);
  if (timeout > 0) request.timeout_s = timeout;
  request.parallel = static_cast<uint32_t>(std::max(1, parallel));
  request.workers = static_cast<uint32_t>(std::max(0, workers));
  if ((*drain || *undrain) && (slot >= 0) == request.all) {
    std::cerr << "lbctl: name a slot, or --all\n";
    return 2;
  }

  json result = call_lbd(path, request);
  switch (request.verb) {
    case Verb::kStatus:
      if (json_output) {
        std::cout << result.dump(2) << "\n";
      } else {
        print_status(result);
      }
      break;
    case Verb::kDrain:
      if (!request.wait) std::cout << "draining " << result.value("drained", json::array()).dump() << "\n";
      else std::cout << "drained\n";
      break;
    case Verb::kPolicy:
      std::cout << "policy " << result.value("policy", std::string()) << "\n";
      break;
    case Verb::kStop:
      std::cout << "lbd is stopping\n";
      break;
    default:
      printf("%s done: %d slot(s) in %.2f s\n", result.value("verb", std::string("operation")).c_str(),
             result.value("slots", 0), result.value("seconds", 0.0));
      break;
  }
  return 0;
}
