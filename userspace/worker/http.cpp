#include "worker/http.h"

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <utility>

namespace lbd {

namespace {

RequestParser& self(llhttp_t* p) { return *static_cast<RequestParser*>(p->data); }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// RFC 9110 token characters, the only ones allowed in a header name. llhttp's lenient default
// lets "Host : x" through; a proxy in front may read such a header differently than we do
// (request smuggling), so RFC 9112 says answer 400.
bool is_token(std::string_view text) {
  for (unsigned char ch : text) {
    if (std::isalnum(ch)) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(ch)) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

void append_number(std::string& out, uint64_t value) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(digits, end);
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (const Header& h : headers_) {
    if (iequals(h.name, name)) return h.value;
  }
  return std::nullopt;
}

std::optional<std::string_view> Request::query_param(std::string_view name) const {
  std::string_view rest = query_;
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

RequestParser::RequestParser(const HttpLimits& limits) : limits_(limits) { reset(); }

RequestParser::~RequestParser() { release_body(); }

const llhttp_settings_t& RequestParser::settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_value = on_header_value;
    s.on_header_value_complete = on_header_value_complete;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_chunk_extension_name = on_chunk_extension;
    s.on_chunk_extension_value = on_chunk_extension;
    s.on_message_complete = on_message_complete;
    return s;
  }();
  return settings;
}

void RequestParser::reset() {
  llhttp_init(&parser_, HTTP_REQUEST, &settings());
  parser_.data = this;
  in_request_ = false;
  headers_complete_ = false;
  continue_pending_ = false;
  paused_ = false;
  keep_alive_ = true;
  error_status_ = 400;
  failure_ = nullptr;
  head_bytes_ = 0;
  framing_bytes_ = 0;
  release_body();
  trim_buffers();
}

// A request's body leaves the budget once the request is answered (or the connection goes).
void RequestParser::release_body() {
  if (budget_) budget_->used -= std::min(budget_->used, body_.size());
  body_.clear();
}

// Buffers keep their capacity from one request to the next (no allocation per request on a
// keep-alive connection), unless a large request grew them: then they go back, so the memory
// an attack made a worker take is returned once it ends.
void RequestParser::trim_buffers() {
  constexpr size_t kKeepHead = 2 * 1024;
  constexpr size_t kKeepBody = 4 * 1024;
  constexpr size_t kKeepFields = 32;
  if (head_.capacity() > kKeepHead) std::string().swap(head_);
  if (body_.capacity() > kKeepBody) std::string().swap(body_);
  if (header_spans_.capacity() > kKeepFields) std::vector<HeaderSpan>().swap(header_spans_);
  if (request_.headers_.capacity() > kKeepFields) decltype(request_.headers_)().swap(request_.headers_);
}

int RequestParser::on_message_begin(llhttp_t* p) {
  RequestParser& r = self(p);
  r.in_request_ = true;
  r.headers_complete_ = false;
  r.error_status_ = 400;  // unless a callback names a more precise one (413, 431)
  r.head_.clear();
  r.header_spans_.clear();
  r.release_body();
  r.target_len_ = 0;
  r.in_value_ = false;
  r.framing_bytes_ = 0;
  return 0;
}

bool RequestParser::take_continue() { return std::exchange(continue_pending_, false); }

// Trailers and chunk extensions arrive after the head, in the body; they are held to the head's
// limit too, so a chunked body cannot carry an endless extension or trailer section.
bool RequestParser::count_framing_bytes(size_t len) {
  framing_bytes_ += len;
  if (framing_bytes_ <= limits_.max_header_bytes) return true;
  error_status_ = 400;
  llhttp_set_error_reason(&parser_, "chunk extensions or trailers too large");
  return false;
}

int RequestParser::on_chunk_extension(llhttp_t* p, const char*, size_t len) {
  return self(p).count_framing_bytes(len) ? 0 : HPE_USER;
}

int RequestParser::on_url(llhttp_t* p, const char* at, size_t len) {
  RequestParser& r = self(p);
  r.head_.append(at, len);
  r.target_len_ += len;
  return 0;
}

// llhttp may deliver a name or value in several pieces (when it spans receive buffers), so a
// piece either extends the current span or, after a completed value, starts the next header.
int RequestParser::on_header_field(llhttp_t* p, const char* at, size_t len) {
  RequestParser& r = self(p);
  if (r.headers_complete_ && !r.count_framing_bytes(len)) return HPE_USER;  // a trailer
  if (!is_token(std::string_view(at, len))) {
    r.error_status_ = 400;
    llhttp_set_error_reason(p, "invalid character in header name");
    return HPE_USER;
  }
  if (r.header_spans_.empty() || r.in_value_) {
    if (r.header_spans_.size() >= r.limits_.max_header_fields) {
      r.error_status_ = 431;
      llhttp_set_error_reason(p, "too many header fields");
      return HPE_USER;
    }
    uint32_t here = static_cast<uint32_t>(r.head_.size());
    r.header_spans_.push_back({here, 0, here, 0});
    r.in_value_ = false;
  }
  r.head_.append(at, len);
  r.header_spans_.back().name_len += len;
  r.header_spans_.back().value_at = static_cast<uint32_t>(r.head_.size());
  return 0;
}

int RequestParser::on_header_value(llhttp_t* p, const char* at, size_t len) {
  RequestParser& r = self(p);
  if (r.headers_complete_ && !r.count_framing_bytes(len)) return HPE_USER;
  r.head_.append(at, len);
  r.header_spans_.back().value_len += len;
  return 0;
}

int RequestParser::on_header_value_complete(llhttp_t* p) {
  self(p).in_value_ = true;  // the next name piece starts a new header
  return 0;
}

// An HTTP/1.1 client that sent `Expect: 100-continue` waits for our go-ahead before the body
// (curl waits a second for it). A body we would refuse anyway is refused now, before it is sent.
int RequestParser::on_headers_complete(llhttp_t* p) {
  RequestParser& r = self(p);
  r.headers_complete_ = true;
  r.continue_pending_ = false;
  if (p->http_major != 1 || p->http_minor < 1) return 0;
  for (const HeaderSpan& span : r.header_spans_) {
    std::string_view name(r.head_.data() + span.name_at, span.name_len);
    std::string_view value(r.head_.data() + span.value_at, span.value_len);
    if (!iequals(name, "Expect") || !iequals(value, "100-continue")) continue;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > r.limits_.max_body_bytes) {
      r.error_status_ = 413;
      llhttp_set_error_reason(p, "request body too large");
      return -1;
    }
    r.continue_pending_ = true;
  }
  return 0;
}

int RequestParser::on_body(llhttp_t* p, const char* at, size_t len) {
  RequestParser& r = self(p);
  if (r.body_.size() + len > r.limits_.max_body_bytes) {
    r.error_status_ = 413;
    llhttp_set_error_reason(p, "request body too large");
    return HPE_USER;
  }
  if (r.budget_) {
    if (r.budget_->used + len > r.budget_->limit) {
      r.error_status_ = 503;
      llhttp_set_error_reason(p, "the worker's memory for request bodies (--body-memory) is in use");
      return HPE_USER;
    }
    r.budget_->used += len;
  }
  r.body_.append(at, len);
  return 0;
}

// Pausing here hands each complete request to the caller before the next pipelined one is
// parsed; the handler never runs inside llhttp's callbacks.
int RequestParser::on_message_complete(llhttp_t* p) {
  RequestParser& r = self(p);
  r.in_request_ = false;
  r.continue_pending_ = false;  // the body is here: no go-ahead needed
  r.keep_alive_ = llhttp_should_keep_alive(p) && !p->upgrade;
  r.build_request();
  return HPE_PAUSED;
}

void RequestParser::build_request() {
  std::string_view head = head_;
  request_.method_ = llhttp_method_name(static_cast<llhttp_method_t>(parser_.method));
  request_.target_ = head.substr(0, target_len_);
  size_t question = request_.target_.find('?');
  request_.path_ = request_.target_.substr(0, question);
  request_.query_ =
      question == std::string_view::npos ? std::string_view() : request_.target_.substr(question + 1);
  request_.headers_.clear();
  for (const HeaderSpan& span : header_spans_) {
    request_.headers_.push_back(
        {head.substr(span.name_at, span.name_len), head.substr(span.value_at, span.value_len)});
  }
  request_.body_ = body_;
  request_.http_minor_ = parser_.http_minor;
}

// Bytes of a head are counted as they arrive, not as llhttp reports pieces of it: blank lines
// before a request line and whitespace inside it are never reported, and a client could send
// them forever. A piece that would take the head past the limit is fed only up to the limit; if
// the head has not ended by then, it is too large.
RequestParser::Step RequestParser::parse(std::string_view data) {
  if (failure_) return {Status::kError, 0};
  if (paused_) return {Status::kRequest, 0};  // the current request has not been answered yet
  if (!counting_head()) return execute(data);
  const size_t room = limits_.max_header_bytes - std::min(head_bytes_, limits_.max_header_bytes);
  if (data.size() <= room) {
    Step step = execute(data);
    if (step.status == Status::kNeedMore && counting_head()) head_bytes_ += data.size();
    return step;
  }
  Step step = execute(data.substr(0, room));
  if (step.status != Status::kNeedMore) return step;
  if (counting_head()) return fail(431, "request head too large", room);
  step = execute(data.substr(room));  // the head ended within the limit: body or trailers follow
  step.consumed += room;
  return step;
}

RequestParser::Step RequestParser::execute(std::string_view data) {
  llhttp_errno_t err = llhttp_execute(&parser_, data.data(), data.size());
  if (err == HPE_OK) return {Status::kNeedMore, data.size()};
  size_t consumed = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data.data());
  if (err == HPE_PAUSED) {
    paused_ = true;
    return {Status::kRequest, consumed};
  }
  if (err == HPE_PAUSED_UPGRADE) {  // an Upgrade request completed: answer it, then close
    paused_ = true;
    keep_alive_ = false;
    return {Status::kRequest, consumed};
  }
  release_body();  // nothing more is parsed: what the body held goes back to the budget now
  return {Status::kError, consumed};
}

RequestParser::Step RequestParser::fail(int status, const char* reason, size_t consumed) {
  error_status_ = status;
  failure_ = reason;
  release_body();
  return {Status::kError, consumed};
}

void RequestParser::next() {
  if (!paused_) return;
  paused_ = false;
  head_bytes_ = 0;
  release_body();
  trim_buffers();
  if (llhttp_get_errno(&parser_) == HPE_PAUSED) llhttp_resume(&parser_);
  // After an upgrade the connection is closed; nothing more is parsed.
}

const char* RequestParser::error_reason() const {
  if (failure_) return failure_;
  const char* reason = llhttp_get_error_reason(&parser_);
  return reason ? reason : "malformed request";
}

const char* status_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "Unknown";
}

void append_response(std::string& out, const ResponseHead& head, std::string_view body) {
  out.append("HTTP/1.1 ");
  append_number(out, static_cast<uint64_t>(head.status));
  out.push_back(' ');
  out.append(status_reason(head.status));
  out.append("\r\nServer: lbd\r\nDate: ");
  out.append(head.date);
  out.append("\r\nContent-Type: ");
  out.append(head.content_type);
  out.append("\r\nContent-Length: ");
  append_number(out, body.size());
  out.append("\r\nX-Worker: ");
  append_number(out, head.worker_slot);
  if (!head.keep_alive) {
    out.append("\r\nConnection: close");
  } else if (head.http10) {
    out.append("\r\nConnection: keep-alive");
  }
  out.append("\r\n");
  out.append(head.extra_headers);
  out.append("\r\n");
  if (!head.omit_body) out.append(body);
}

ResponseHead response_head_for(const RequestParser& parser, bool may_keep_alive) {
  ResponseHead head;
  head.keep_alive = parser.keep_alive() && may_keep_alive;
  head.http10 = parser.request().http_minor() == 0;
  head.omit_body = parser.request().method() == "HEAD";
  return head;
}

std::string http_date_now() {
  char text[64];
  time_t now = time(nullptr);
  tm utc{};
  gmtime_r(&now, &utc);
  size_t n = strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S GMT", &utc);
  return std::string(text, n);
}

}  // namespace lbd
