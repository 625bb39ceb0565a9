#include "lbload/response_parser.h"

#include <strings.h>

#include <algorithm>

namespace lbd::load {

namespace {

constexpr std::string_view kWorkerHeader = "x-worker";
// An X-Worker value is a slot number; anything longer is cut here (and counted under the cut).
constexpr size_t kMaxWorkerValue = 32;

ResponseParser& self(llhttp_t* p) { return *static_cast<ResponseParser*>(p->data); }

}  // namespace

const llhttp_settings_t& ResponseParser::settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_header_field = on_header_field;
    s.on_header_field_complete = on_header_field_complete;
    s.on_header_value = on_header_value;
    s.on_header_value_complete = on_header_value_complete;
    s.on_headers_complete = on_headers_complete;
    s.on_message_complete = on_message_complete;
    return s;
  }();
  return settings;
}

ResponseParser::ResponseParser() {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
}

void ResponseParser::clear_response() {
  started_ = false;
  complete_ = false;
  status_ = 0;
  keep_alive_ = false;
  field_.clear();
  field_too_long_ = false;
  in_worker_value_ = false;
  has_worker_ = false;
  worker_.clear();
}

void ResponseParser::reset() {
  llhttp_reset(&parser_);
  clear_response();
}

void ResponseParser::next() {
  clear_response();
  // on_message_complete paused the parser so that one feed() never runs into a second response.
  if (llhttp_get_errno(&parser_) == HPE_PAUSED) llhttp_resume(&parser_);
}

int ResponseParser::on_message_begin(llhttp_t* p) {
  self(p).started_ = true;
  return 0;
}

// llhttp may hand a name or value over in pieces (when it spans two reads), hence the appending.
int ResponseParser::on_header_field(llhttp_t* p, const char* at, size_t len) {
  ResponseParser& r = self(p);
  if (r.field_too_long_) return 0;
  if (r.field_.size() + len > kWorkerHeader.size()) {
    r.field_too_long_ = true;
    return 0;
  }
  r.field_.append(at, len);
  return 0;
}

int ResponseParser::on_header_field_complete(llhttp_t* p) {
  ResponseParser& r = self(p);
  r.in_worker_value_ = !r.field_too_long_ && r.field_.size() == kWorkerHeader.size() &&
                       strncasecmp(r.field_.data(), kWorkerHeader.data(), kWorkerHeader.size()) == 0;
  if (r.in_worker_value_) {
    r.has_worker_ = true;
    r.worker_.clear();
  }
  r.field_.clear();
  r.field_too_long_ = false;
  return 0;
}

int ResponseParser::on_header_value(llhttp_t* p, const char* at, size_t len) {
  ResponseParser& r = self(p);
  if (r.in_worker_value_ && r.worker_.size() < kMaxWorkerValue) {
    r.worker_.append(at, std::min(len, kMaxWorkerValue - r.worker_.size()));
  }
  return 0;
}

int ResponseParser::on_header_value_complete(llhttp_t* p) {
  self(p).in_worker_value_ = false;
  return 0;
}

int ResponseParser::on_headers_complete(llhttp_t* p) {
  // llhttp 8.1 lets some malformed status lines through with a code of 0 ("HTTP/1.0  e051.1 200
  // OK", found by tests/fuzz/lbload_response_fuzz): not an answer to count under any status.
  if (p->status_code < 100 || p->status_code > 999) {
    llhttp_set_error_reason(p, "invalid status code");
    return -1;
  }
  self(p).status_ = p->status_code;
  return 0;
}

int ResponseParser::on_message_complete(llhttp_t* p) {
  ResponseParser& r = self(p);
  r.complete_ = true;
  r.keep_alive_ = llhttp_should_keep_alive(p) != 0;
  return HPE_PAUSED;
}

ResponseParser::Step ResponseParser::feed(std::string_view data) {
  if (complete_) return {Status::kComplete, 0};
  const llhttp_errno_t err = llhttp_execute(&parser_, data.data(), data.size());
  if (err == HPE_OK) return {Status::kNeedMore, data.size()};
  if (err == HPE_PAUSED && complete_) {
    const size_t consumed = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data.data());
    return {Status::kComplete, consumed};
  }
  return {Status::kBad, 0};
}

bool ResponseParser::finish() {
  if (complete_) return true;
  if (!started_) return false;
  // A body delimited by the close: llhttp calls on_message_complete now. (Its result is not
  // needed: complete_ says whether the message ended.)
  (void)llhttp_finish(&parser_);
  return complete_;
}

const char* ResponseParser::error() const {
  const char* reason = llhttp_get_error_reason(&parser_);
  return reason ? reason : llhttp_errno_name(llhttp_get_errno(&parser_));
}

}  // namespace lbd::load
