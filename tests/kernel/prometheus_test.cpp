// A real Prometheus (Debian's `prometheus` package) scrapes lbd's /metrics every second on
// loopback, and its query API then reports exactly the requests a client sent. Runs lbd
// in --mode reuseport (no root). Prometheus is this test's child and is killed at its end (the
// LbdProcess helper kills its whole process group); it skips when Prometheus is not installed.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "support/admin.h"

namespace lbd::test {
namespace {

using nlohmann::json;

std::string find_on_path(const std::string& program) {
  const char* path = getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t at = 0;
  while (at <= dirs.size()) {
    size_t colon = dirs.find(':', at);
    std::string candidate = dirs.substr(at, colon == std::string::npos ? std::string::npos : colon - at) + "/" + program;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    if (colon == std::string::npos) break;
    at = colon + 1;
  }
  return {};
}

// A loopback port nobody listens on right now: bound to port 0, read back, released.
uint16_t free_loopback_port() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return 0;
  }
  return ntohs(addr.sin_port);
}

class RealPrometheus : public AdminTest {
 protected:
  // Asks Prometheus's HTTP API for an instant query; the one value it returns, or nothing (no
  // answer yet, or no series). HTTP/1.0, so that Go answers with a plain body, never chunked.
  std::optional<double> query(const net::Address& prometheus, const std::string& encoded_query) {
    HttpResult r = fetch(prometheus,
                         "GET /api/v1/query?query=" + encoded_query + " HTTP/1.0\r\nHost: prometheus\r\n\r\n",
                         after(2s));
    if (r.status() != 200) return std::nullopt;
    json answer = json::parse(r.response.body, nullptr, /*allow_exceptions=*/false);
    if (answer.is_discarded() || answer.value("status", "") != "success") return std::nullopt;
    const json& result = answer["data"]["result"];
    if (!result.is_array() || result.size() != 1) return std::nullopt;
    return std::stod(result[0]["value"][1].get<std::string>());
  }
};

TEST_F(RealPrometheus, ScrapesLbdAndCountsEveryRequestSent) {
  const std::string binary = find_on_path("prometheus");
  if (binary.empty()) {
    GTEST_SKIP() << "prometheus not found (Debian package prometheus; scripts/install-deps.sh installs it)";
  }
  ASSERT_NO_FATAL_FAILURE(start_with_admin(lbd_flags("reuseport", 2)));

  const uint16_t port = free_loopback_port();
  ASSERT_NE(port, 0);
  const net::Address prometheus_address = net::Address::parse("127.0.0.1:" + std::to_string(port));
  std::ofstream(dir_.path("prometheus.yml"))
      << "global:\n"
         "  scrape_interval: 1s\n"
         "  scrape_timeout: 1s\n"
         "  evaluation_interval: 1s\n"
         "scrape_configs:\n"
         "  - job_name: lbd\n"
         "    static_configs:\n"
         "      - targets: ['"
      << admin_address().to_string() << "']\n";
  LbdProcess prometheus(LbdProcess::Options{
      binary,
      {"--config.file=" + dir_.path("prometheus.yml"), "--storage.tsdb.path=" + dir_.path("tsdb"),
       "--web.listen-address=" + prometheus_address.to_string()},
      {}});
  ASSERT_TRUE(eventually(after(30s), [&] {
    return fetch(prometheus_address, "GET /-/ready HTTP/1.0\r\n\r\n", after(1s)).status() == 200;
  }, 50ms)) << "Prometheus did not become ready";

  constexpr int kRequests = 300;
  HttpConnection c = HttpConnection::open(address(), after(2s));
  for (int i = 0; i < kRequests; i++) {
    HttpResult r = c.request(http_get("/"), after(2s));
    ASSERT_EQ(r.status(), 200) << "request " << i << ": " << r.describe();
  }

  // Scraped once a second: the target comes up, and the counter reaches what was sent.
  std::optional<double> up, requests;
  const Deadline start = Clock::now();
  EXPECT_TRUE(eventually(after(30s), [&] {
    up = query(prometheus_address, "up");
    requests = query(prometheus_address, "sum%28lbd_requests_total%29");
    return up == 1.0 && requests == static_cast<double>(kRequests);
  }, 200ms)) << "up " << (up ? std::to_string(*up) : "none") << ", sum(lbd_requests_total) "
             << (requests ? std::to_string(*requests) : "none");
  std::cout << "Prometheus saw " << (requests ? *requests : -1) << " requests "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count()
            << " ms after they were sent\n";
  // The histogram arrived whole: its count is the same number.
  EXPECT_EQ(query(prometheus_address, "sum%28lbd_request_duration_seconds_count%29"),
            static_cast<double>(kRequests));
}

}  // namespace
}  // namespace lbd::test
