// The screen of `lbctl top` (top.h): a curses session, one loop that waits on the keyboard,
// SIGINT/SIGTERM/SIGHUP, the pending status answer and the pending operation's answer at once
// (poll), and the drawing.
//
// Nothing here waits for lbd. Each status request and each operation a key starts is a
// ControlCall whose socket joins the poll set. So a reload that takes a minute shows its
// progress lines in the status line while the table keeps refreshing every second, and `q`
// quits at once: lbd carries on with the reload (the control socket drops an answer nobody
// waits for). One operation at a time, as lbd itself runs one long operation at a time.
#include "lbctl/top.h"

#include <curses.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include "common/unique_fd.h"
#include "lbctl/control_client.h"
#include "lbctl/top_model.h"

namespace lbd::ctl {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto kRefreshEvery = 1s;
// A status request still unanswered after this long is worth a word on the screen.
constexpr auto kSlowAnswer = 3s;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

control::Request request_for(control::Verb verb) {
  control::Request request;
  request.verb = verb;
  return request;
}

// One status answer and when it arrived: rates are over the time between two arrivals.
struct Snapshot {
  control::StatusReport status;
  Clock::time_point at;
};

Result<Snapshot> take_snapshot(const std::string& socket_path) {
  auto status = call_lbd(socket_path, request_for(control::Verb::kStatus), nullptr);
  if (!status) return status.error();
  return Snapshot{control::status_from_json(*status), Clock::now()};
}

// `lbctl top | cat`: the same columns, once.
Result<TopEnd> print_snapshot(const std::string& socket_path) {
  auto first = take_snapshot(socket_path);
  if (!first) return first.error();
  // The interval req/s and p99 are measured over: one second of lbd's work, as on the screen.
  std::this_thread::sleep_for(kRefreshEvery);
  auto second = take_snapshot(socket_path);
  if (!second) return second.error();
  const Dashboard dashboard =
      build_dashboard(&first->status, second->status, seconds_between(first->at, second->at));
  fputs(plain_snapshot(dashboard).c_str(), stdout);
  return TopEnd{};
}

// --- signals and the terminal ---------------------------------------------------------------------

// SIGINT, SIGTERM and SIGHUP, blocked and read from a signalfd in the main loop rather than
// handled asynchronously: the loop ends as for `q`, and the terminal is restored on the way out.
// (A handler plus ppoll() would miss them while stdin stays readable, e.g. on a terminal that
// hung up: ppoll only delivers a signal that interrupts its wait.) Signals the parent left
// ignored stay ignored (nohup, a script trapping SIGINT). The destructor restores the mask.
class StopSignals {
 public:
  StopSignals() {
    sigset_t stop;
    sigemptyset(&stop);
    for (int signal_number : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction current {};
      sigaction(signal_number, nullptr, &current);
      if (current.sa_handler != SIG_IGN) sigaddset(&stop, signal_number);
    }
    sigprocmask(SIG_BLOCK, &stop, &previous_mask_);
    fd_.reset(signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!fd_) error_ = errno;
  }
  ~StopSignals() {
    fd_.reset();
    sigprocmask(SIG_SETMASK, &previous_mask_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  Result<void> check() const {
    if (!fd_) return Error::from_errno(error_, "signalfd");
    return {};
  }
  // Readable when one of them has arrived.
  int fd() const { return fd_.get(); }
  // The signal that arrived, or 0.
  int take() const {
    signalfd_siginfo info{};
    return read(fd_.get(), &info, sizeof(info)) == sizeof(info) ? static_cast<int>(info.ssi_signo) : 0;
  }

 private:
  UniqueFd fd_;
  int error_ = 0;  // signalfd's errno
  sigset_t previous_mask_{};
};

enum ColorPair : short { kGood = 1, kBusy, kBad };

// The terminal in curses mode while this lives. The destructor gives it back as it was (line
// mode, echo, cursor, the normal screen) on every way out: q, a signal, an error, an exception.
class CursesSession {
 public:
  CursesSession() = default;
  ~CursesSession() {
    if (!screen_) return;
    endwin();
    delscreen(screen_);
  }
  CursesSession(const CursesSession&) = delete;
  CursesSession& operator=(const CursesSession&) = delete;

  Result<void> open() {
    // The character set only: numbers keep their C formatting (no decimal commas).
    setlocale(LC_CTYPE, "");
    // newterm, not initscr: initscr exits the process when the terminal is unknown.
    screen_ = newterm(nullptr, stdout, stdin);
    if (!screen_) {
      const char* term = getenv("TERM");
      return Error(std::error_code(), std::string("cannot drive this terminal (TERM=") + (term ? term : "") +
                                          "); pipe the output for a plain snapshot: lbctl top | cat");
    }
    set_term(screen_);
    cbreak();   // keys at once; Ctrl-C still raises SIGINT
    noecho();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);  // the loop polls stdin; getch() only collects what is there
    curs_set(0);
    if (has_colors()) {
      start_color();
      use_default_colors();
      init_pair(kGood, COLOR_GREEN, -1);
      init_pair(kBusy, COLOR_YELLOW, -1);
      init_pair(kBad, COLOR_RED, -1);
    }
    return {};
  }

 private:
  SCREEN* screen_ = nullptr;
};

// --- the screen -----------------------------------------------------------------------------------

short color_of_state(const std::string& state) {
  if (state == "active") return kGood;
  if (state == "starting" || state == "draining" || state == "restarting") return kBusy;
  if (state == "failed") return kBad;
  return 0;
}

// Writes `text` on line `y` from column 0, cut at the screen's width; nothing below the screen.
void put_line(int y, const std::string& text, attr_t attributes = A_NORMAL, short color = 0) {
  if (y < 0 || y >= LINES) return;
  attr_set(attributes, color, nullptr);
  mvaddnstr(y, 0, text.c_str(), COLS);
  attr_set(A_NORMAL, 0, nullptr);
}

class TopScreen {
 public:
  TopScreen(std::string socket_path, Snapshot first, const StopSignals& signals)
      : socket_path_(std::move(socket_path)), signals_(signals), last_(std::move(first)) {
    dashboard_ = build_dashboard(nullptr, last_.status, 0);
    next_refresh_ = last_.at + kRefreshEvery;
    remember_selection();
  }

  Result<TopEnd> run() {
    draw();
    while (!quit_ && !stop_signal_) {
      if (!status_call_ && Clock::now() >= next_refresh_) start_status_request();

      pollfd fds[4];
      nfds_t count = 0;
      fds[count++] = {STDIN_FILENO, POLLIN, 0};
      fds[count++] = {signals_.fd(), POLLIN, 0};
      const int status_index = status_call_ ? static_cast<int>(count) : -1;
      if (status_call_) fds[count++] = {status_call_->fd(), POLLIN, 0};
      const int action_index = action_ ? static_cast<int>(count) : -1;
      if (action_) fds[count++] = {action_->call.fd(), POLLIN, 0};

      // Until the next refresh; while a status answer is pending, wake anyway once a second
      // to say it is late.
      const auto wake_at = status_call_ ? Clock::now() + kRefreshEvery : next_refresh_;
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake_at - Clock::now());
      const int ready = poll(fds, count, static_cast<int>(std::max<int64_t>(0, wait.count())));
      if (ready < 0 && errno != EINTR) return Error::from_errno("poll");
      if (ready < 0) {
        read_keys();  // a resize (SIGWINCH) interrupts the wait: curses has a KEY_RESIZE for us
      } else {
        // The terminal hung up: nothing more will come from it, and nobody sees the screen.
        if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL)) quit_ = true;
        else if (fds[0].revents & POLLIN) read_keys();
        if (fds[1].revents) stop_signal_ = signals_.take();
        if (status_index >= 0 && fds[status_index].revents) on_status_readable();
        if (action_index >= 0 && fds[action_index].revents) on_action_readable();
      }
      if (!quit_ && !stop_signal_) draw();
    }
    TopEnd end;
    end.signal = stop_signal_;
    if (action_) end.note = "the " + action_->label + " goes on in lbd; lbctl status shows it";
    return end;
  }

 private:
  struct Action {
    control::Request request;
    std::string label;  // "drain slot 1", "reload"
    ControlCall call;
  };

  // --- lbd ---

  void start_status_request() {
    next_refresh_ = Clock::now() + kRefreshEvery;
    auto call = ControlCall::start(socket_path_, request_for(control::Verb::kStatus));
    if (!call) {
      status_problem_ = call.error().message();
      return;
    }
    status_call_.emplace(std::move(*call));
    status_sent_at_ = Clock::now();
  }

  void on_status_readable() {
    auto answer = status_call_->read_some(nullptr);
    if (!answer) return;
    status_call_.reset();
    if (!*answer) {
      status_problem_ = answer->error().message();
      return;
    }
    Snapshot now{control::status_from_json(**answer), Clock::now()};
    dashboard_ = build_dashboard(&last_.status, now.status, seconds_between(last_.at, now.at));
    last_ = std::move(now);
    status_problem_.clear();
    restore_selection();
  }

  void act(control::Request request, std::string label) {
    if (action_) {
      say("one operation at a time: the " + action_->label + " is still running", true);
      return;
    }
    auto call = ControlCall::start(socket_path_, request);
    if (!call) {
      say(label + ": " + call.error().message(), true);
      return;
    }
    say(label + "...", false);
    action_.emplace(Action{std::move(request), std::move(label), std::move(*call)});
  }

  void on_action_readable() {
    auto answer = action_->call.read_some(
        [&](const std::string& progress) { say(action_->label + "... " + progress, false); });
    if (!answer) return;
    if (*answer) {
      say(describe_result(action_->request, **answer), false);
      // The header shows the new policy at once, and a second `p` moves on from it rather than
      // from what the last status answer said.
      if (action_->request.verb == control::Verb::kPolicy) dashboard_.overview.policy = action_->request.policy;
    } else {
      say(action_->label + ": " + answer->error().message(), true);
    }
    action_.reset();
  }

  // --- keys ---

  void read_keys() {
    int key;
    while (!quit_ && (key = getch()) != ERR) on_key(key);
  }

  void on_key(int key) {
    const WorkerRow* row = selected_row();
    switch (key) {
      case 'q':
      case 'Q':
        quit_ = true;
        return;
      case KEY_UP:
      case 'k':
        move_selection(-1);
        return;
      case KEY_DOWN:
      case 'j':
        move_selection(+1);
        return;
      case 'd':
      case 'u': {
        if (!row) return say("no worker selected", true);
        control::Request request = request_for(key == 'd' ? control::Verb::kDrain : control::Verb::kUndrain);
        request.slot = row->slot;
        return act(std::move(request), std::string(key == 'd' ? "drain" : "undrain") + " slot " +
                                           std::to_string(row->slot));
      }
      case 'r':
        return act(request_for(control::Verb::kReload), "reload");
      case 'p': {
        control::Request request = request_for(control::Verb::kPolicy);
        request.policy = next_policy(dashboard_.overview.policy);
        const std::string label = "policy " + request.policy;
        return act(std::move(request), label);
      }
      default:
        return;  // KEY_RESIZE included: curses has resized stdscr, the next draw fills it
    }
  }

  // --- selection: follows the same worker (slot and pid) across refreshes ---

  const WorkerRow* selected_row() const {
    return selected_ < dashboard_.rows.size() ? &dashboard_.rows[selected_] : nullptr;
  }

  void move_selection(int step) {
    if (dashboard_.rows.empty()) return;
    const auto last = static_cast<long>(dashboard_.rows.size()) - 1;
    selected_ = static_cast<size_t>(std::clamp(static_cast<long>(selected_) + step, 0L, last));
    remember_selection();
  }

  void remember_selection() {
    if (const WorkerRow* row = selected_row()) {
      selected_slot_ = row->slot;
      selected_pid_ = row->pid;
    }
  }

  // After a refresh: the same process if it is still there, else its slot, else the same line.
  void restore_selection() {
    const auto& rows = dashboard_.rows;
    if (rows.empty()) {
      selected_ = 0;
      return;
    }
    auto same = [&](auto matches) { return std::find_if(rows.begin(), rows.end(), matches); };
    auto it = same([&](const WorkerRow& r) { return r.slot == selected_slot_ && r.pid == selected_pid_; });
    if (it == rows.end()) it = same([&](const WorkerRow& r) { return r.slot == selected_slot_; });
    selected_ = it != rows.end() ? static_cast<size_t>(it - rows.begin()) : std::min(selected_, rows.size() - 1);
    remember_selection();
  }

  // --- drawing ---

  void say(std::string message, bool is_error) {
    message_ = std::move(message);
    message_is_error_ = is_error;
  }

  void draw() {
    erase();
    const auto header = header_lines(dashboard_.overview);
    put_line(0, header[0], A_BOLD);
    put_line(1, header[1]);
    if (!status_problem_.empty()) {
      put_line(2, "no fresh numbers: " + status_problem_, A_BOLD, kBad);
    } else if (status_call_ && Clock::now() - status_sent_at_ > kSlowAnswer) {
      const int waited = static_cast<int>(seconds_between(status_sent_at_, Clock::now()));
      put_line(2, "lbd has not answered for " + std::to_string(waited) + " s", A_BOLD, kBusy);
    }
    constexpr int kTableTop = 3;
    put_line(kTableTop, column_header(), A_BOLD | A_UNDERLINE);

    // Rows between the column header and the two bottom lines; scrolled to keep the selection in view.
    const int first_line = kTableTop + 1;
    const auto visible = static_cast<size_t>(std::max(0, LINES - first_line - 2));
    if (selected_ < first_row_) first_row_ = selected_;
    if (visible > 0 && selected_ >= first_row_ + visible) first_row_ = selected_ - visible + 1;
    for (size_t i = first_row_; i < dashboard_.rows.size() && i < first_row_ + visible; i++) {
      const WorkerRow& row = dashboard_.rows[i];
      const int y = first_line + static_cast<int>(i - first_row_);
      const attr_t base = i == selected_ ? A_REVERSE : A_NORMAL;
      std::string text = format_row(row);
      if (i == selected_) text.resize(std::max(text.size(), static_cast<size_t>(COLS)), ' ');
      put_line(y, text, base);
      if (const short color = color_of_state(row.state)) mvchgat(y, kStateColumn, kStateWidth, base, color, nullptr);
      if (row.pid) mvchgat(y, kBarColumn + 1, kBarWidth - 2, base | A_BOLD, kGood, nullptr);
    }

    put_line(LINES - 2, message_, message_is_error_ ? A_BOLD : A_NORMAL, message_is_error_ ? kBad : 0);
    put_line(LINES - 1, "up/down select   d drain   u undrain   r reload   p policy (rr>least>hash>sticky)   q quit",
             A_DIM);
    refresh();
  }

  const std::string socket_path_;
  const StopSignals& signals_;

  Snapshot last_;  // the newest status answer; the next one's rates are measured from it
  Dashboard dashboard_;
  std::optional<ControlCall> status_call_;
  Clock::time_point status_sent_at_;
  Clock::time_point next_refresh_;
  std::string status_problem_;  // why the numbers shown are not fresh ("lbd is not running ...")

  std::optional<Action> action_;  // the operation a key started, until lbd answers it
  std::string message_;           // the status line: the last operation's progress or outcome
  bool message_is_error_ = false;

  size_t selected_ = 0;   // index into dashboard_.rows
  size_t first_row_ = 0;  // the first row on screen
  uint32_t selected_slot_ = 0;
  std::optional<int64_t> selected_pid_;
  bool quit_ = false;
  int stop_signal_ = 0;  // SIGINT, SIGTERM or SIGHUP arrived
};

}  // namespace

Result<TopEnd> run_top(const std::string& socket_path) {
  if (!isatty(STDOUT_FILENO)) return print_snapshot(socket_path);
  // The first answer comes before the screen takes over: if lbd is not running, that is one
  // plain line on a normal terminal, as with every other verb.
  auto first = take_snapshot(socket_path);
  if (!first) return first.error();
  StopSignals signals;    // destroyed last: a signal that comes during the clean-up waits for it
  if (auto ok = signals.check(); !ok) return ok.error();
  CursesSession session;
  if (auto opened = session.open(); !opened) return opened.error();
  TopScreen screen(socket_path, std::move(*first), signals);
  return screen.run();
}

}  // namespace lbd::ctl
