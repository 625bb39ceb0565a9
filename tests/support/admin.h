// The admin endpoint (--admin) from a test: lbd with its admin address on port 0, the real port
// read from lbd's log ("admin: serving http://ADDR"), requests to it, and /metrics read back
// into numbers.
//
//   class Metrics : public AdminTest {};
//   TEST_F(Metrics, ...) {
//     ASSERT_NO_FATAL_FAILURE(start_with_admin(lbd_flags("reuseport", 2)));
//     EXPECT_EQ(admin_get("/healthz").status(), 200);
//     EXPECT_EQ(scrape().sum("lbd_requests_total"), 0);
//   }
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/control_test.h"

namespace lbd::test {

struct MetricSample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// A /metrics answer, parsed (text format 0.0.4, as lbd writes it).
class MetricSamples {
 public:
  // A line that does not parse is a test failure (ADD_FAILURE), and is skipped.
  static MetricSamples parse(const std::string& text);

  // The sum of the samples named `name` whose labels include every pair in `match`.
  double sum(std::string_view name, const std::map<std::string, std::string>& match = {}) const;
  // How many samples are named `name`.
  size_t count(std::string_view name) const;
  const std::vector<MetricSample>& samples() const { return samples_; }
  const std::string& text() const { return text_; }

 private:
  std::vector<MetricSample> samples_;
  std::string text_;
};

class AdminTest : public ControlTest {
 protected:
  // lbd with `args`, a control socket (ControlTest) and --admin 127.0.0.1:0.
  void start_with_admin(std::vector<std::string> args) {
    args.insert(args.end(), {"--admin", "127.0.0.1:0"});
    ASSERT_NO_FATAL_FAILURE(start_controlled(std::move(args)));
    // Logged before the workers start, so it is there once lbd is ready.
    auto line = lbd().wait_for_log(R"(\[lbd\] admin: serving http://(.+)$)", after(1s));
    ASSERT_TRUE(line) << "no 'admin: serving' line";
    admin_ = net::Address::parse(line->groups[1]);
  }

  const net::Address& admin_address() const { return *admin_; }

  // One request on a new connection, the way a monitoring system or a balancer's health check
  // asks.
  HttpResult admin_get(std::string_view target, Deadline deadline = after(5s)) {
    return fetch(*admin_, http_get(target, /*close=*/true), deadline);
  }

  // GET /metrics, parsed; a failure if it is not a 200.
  MetricSamples scrape() {
    HttpResult r = admin_get("/metrics");
    EXPECT_EQ(r.status(), 200) << r.describe();
    return MetricSamples::parse(r.ok() ? r.response.body : std::string());
  }

  std::optional<net::Address> admin_;
};

}  // namespace lbd::test
