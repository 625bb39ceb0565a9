// An Exchange that answers into a string exactly as ConnectionExchange and Worker::respond() do
// (one answer per request, its head from response_head_for(), appended to the output buffer),
// without a socket or a ring: what bench/micro measures and tests/fuzz checks. A deferred answer
// (respond_after) runs at once; there is no clock to wait on.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "worker/handler.h"
#include "worker/http.h"

namespace lbd {

class BufferedExchange final : public Exchange {
 public:
  BufferedExchange(const RequestParser& parser, std::string& out, std::string_view date)
      : parser_(parser), out_(out), date_(date) {}

  const Request& request() const override { return parser_.request(); }
  uint32_t worker_slot() const override { return 0; }
  void add_header(std::string_view name, std::string_view value) override {
    extra_headers_.append(name).append(": ").append(value).append("\r\n");
  }
  void respond(int status, std::string_view body, std::string_view content_type) override {
    if (responded_) return;
    responded_ = true;
    head_ = response_head_for(parser_, /*may_keep_alive=*/true);
    head_.status = status;
    head_.content_type = content_type;
    head_.extra_headers = extra_headers_;
    head_.worker_slot = 0;
    head_.date = date_;
    append_response(out_, head_, body);
  }
  void respond_after(std::chrono::milliseconds, std::function<void(Exchange&)> then) override { then(*this); }

  // A new request on the same connection.
  void begin() {
    responded_ = false;
    extra_headers_.clear();
  }
  bool responded() const { return responded_; }
  // The head of the last answer (keep_alive says whether the connection stays open).
  const ResponseHead& head() const { return head_; }

 private:
  const RequestParser& parser_;
  std::string& out_;
  std::string_view date_;
  std::string extra_headers_;
  ResponseHead head_;
  bool responded_ = false;
};

}  // namespace lbd
