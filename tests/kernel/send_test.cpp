// `lbctl send SLOT|--all TEXT` (docs/ARCHITECTURE.md, section 6): one line of text to one worker or
// to every active one. lbd's own workers hand it to the service's on_message (the bundled app
// keeps the last one and, with --demo-routes, serves it on /last-message); an exec-mode program
// reads it, a line each, from $LBD_MESSAGE_FD. A worker or program that does not read gets no
// more than its channel holds, the message counts as not delivered, and lbd never waits on it.
// Text that is not one line is refused with one clear line, by lbctl and by lbd.
#include <gtest/gtest.h>
#include <signal.h>

#include <string>

#include "support/exec_test.h"

namespace lbd::test {
namespace {

using nlohmann::json;

// What `slot` answers to GET /last-message: "<status> <body>", from new connections until that
// worker answers (the kernel's hash chooses the worker); "no answer from worker N" otherwise.
std::string last_message_of(const net::Address& address, int slot, Deadline deadline) {
  std::string answer = "no answer from worker " + std::to_string(slot);
  eventually(deadline, [&] {
    HttpResult r = fetch(address, http_get("/last-message", true), after(2s));
    if (!r.ok() || r.worker() != slot) return false;
    answer = std::to_string(r.status()) + " " + r.response.body;
    return true;
  }, 1ms);
  return answer;
}

// Until `slot` answers `expected` (a worker handles its message and requests on one loop, in
// whichever order they come; a program reads its pipe on a thread of its own).
bool answers(const net::Address& address, int slot, const std::string& expected, std::string& last,
             Deadline deadline) {
  return eventually(deadline, [&] {
    last = last_message_of(address, slot, after(5s));
    return last == expected;
  });
}

class Send : public ControlTest {};

TEST_F(Send, ReachesOnlyTheSlotItNamesAndWithAllEveryActiveWorker) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2, {"--demo-routes"})));
  EXPECT_EQ(last_message_of(address(), 0, after(10s)), "404 no message yet\n");
  EXPECT_EQ(last_message_of(address(), 1, after(10s)), "404 no message yet\n");

  CommandResult one = lbctl({"send", "1", "hello, worker one"});
  ASSERT_TRUE(one.exited(0)) << one.describe();
  EXPECT_EQ(one.out, "sent to 1 of 1 worker(s) (slot 1)\n");
  std::string last;
  EXPECT_TRUE(answers(address(), 1, "200 hello, worker one\n", last, after(10s))) << last;
  EXPECT_TRUE(lbd().wait_for_log(R"(\[worker 1\] message: hello, worker one$)", after(5s))) << lbd().log();
  EXPECT_EQ(last_message_of(address(), 0, after(10s)), "404 no message yet\n") << "worker 0 was not named";
  EXPECT_EQ(lbd().count_log(R"(\[worker 0\] message:)"), 0u) << lbd().log();

  // --all, and the answer as JSON: which slots got it, and none that did not.
  CommandResult all = lbctl({"send", "--all", "--json", "caf\xc3\xa9 for everyone"});
  ASSERT_TRUE(all.exited(0)) << all.describe();
  const json answer = json::parse(all.out, nullptr, false);
  EXPECT_EQ(answer.value("sent", json()), json::array({0, 1})) << all.out;
  EXPECT_EQ(answer.value("undelivered", json()), json::array()) << all.out;
  EXPECT_EQ(answer.value("workers", 0), 2) << all.out;
  for (int slot : {0, 1}) {
    EXPECT_TRUE(answers(address(), slot, "200 caf\xc3\xa9 for everyone\n", last, after(10s))) << last;
  }
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

TEST_F(Send, TextThatIsNotOneLineAndSlotsWithoutAWorkerAreRefusedWithOneClearLine) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2, {"--demo-routes"})));
  // lbctl refuses before it asks (exit 2, a usage error), and says why.
  const std::pair<std::string, std::string> refused[] = {
      {"two\nlines", "lbctl: cannot send: the message is one line: it may not contain a newline\n"},
      {"carriage\rreturn", "lbctl: cannot send: the message is one line: it may not contain a newline\n"},
      {std::string(4096, 'x'), "lbctl: cannot send: the message is 4096 bytes; at most 4095 may be sent\n"},
      {"\x1b[31mred", "lbctl: cannot send: the message may not contain control characters (byte 27 at 0)\n"},
      {"bad \xff byte", "lbctl: cannot send: the message is not valid UTF-8 (at byte 4)\n"},
      {"", "lbctl: cannot send: the message is empty\n"},
  };
  for (const auto& [text, error] : refused) {
    CommandResult r = lbctl({"send", "0", text});
    EXPECT_TRUE(r.exited(2)) << r.describe();
    EXPECT_EQ(r.err, error) << r.describe();
  }
  CommandResult unquoted = lbctl({"send", "0", "hello", "world"});
  EXPECT_TRUE(unquoted.exited(2)) << unquoted.describe();
  EXPECT_NE(unquoted.err.find("quote TEXT if it has spaces"), std::string::npos) << unquoted.describe();
  // With --all the first of two words could be an app's name: lbctl says which it took it for.
  CommandResult unquoted_all = lbctl({"send", "--all", "flush", "caches"});
  EXPECT_TRUE(unquoted_all.exited(1)) << unquoted_all.describe();
  EXPECT_NE(unquoted_all.err.find("if 'flush' is part of the text, quote it: lbctl send --all 'flush caches'"),
            std::string::npos)
      << unquoted_all.describe();
  // 4095 bytes is one line of 4096 with its newline: it goes.
  CommandResult longest = lbctl({"send", "0", std::string(4095, 'y')});
  EXPECT_TRUE(longest.exited(0)) << longest.describe();

  // Slots: the words of `lbctl drain` for one that does not exist, and the slot's state for one
  // with no active worker.
  CommandResult missing = lbctl({"send", "5", "hello"});
  EXPECT_TRUE(missing.exited(1)) << missing.describe();
  EXPECT_EQ(missing.err, "lbctl: no such slot: 5 (slots are 0-1)\n");
  EXPECT_EQ(lbctl({"drain", "5"}).err, missing.err) << "the same words as drain's";
  ASSERT_TRUE(lbctl({"drain", "1", "--wait"}).exited(0));
  CommandResult drained = lbctl({"send", "1", "hello"});
  EXPECT_TRUE(drained.exited(1)) << drained.describe();
  EXPECT_EQ(drained.err, "lbctl: slot 1 has no active worker (it is drained): nothing sent\n");
  CommandResult all = lbctl({"send", "--all", "to whoever serves"});
  EXPECT_TRUE(all.exited(0)) << all.describe();
  EXPECT_EQ(all.out, "sent to 1 of 1 worker(s) (slot 0)\n") << "a drained slot is not an active worker";

  // What lbctl would never send, straight on the control socket: lbd refuses it the same way.
  const std::pair<std::string, std::string> raw[] = {
      {R"({"verb":"send","slot":0,"text":"a\nb"})", "the message is one line: it may not contain a newline"},
      {R"({"verb":"send","slot":0,"text":"a\u0007b"})", "the message may not contain control characters (byte 7 at 1)"},
      {R"({"verb":"send","slot":0,"text":")" + std::string(5000, 'z') + "\"}",
       "the message is 5000 bytes; at most 4095 may be sent"},
      {R"({"verb":"send","text":"x"})", "name one slot, or all"},
      {"{\"verb\":\"send\",\"slot\":0,\"text\":\"\xc3\x28\"}", "malformed request: not JSON"},
  };
  for (const auto& [line, error] : raw) {
    ControlConnection c = ControlConnection::open(socket_path());
    ASSERT_TRUE(c.valid());
    ASSERT_EQ(c.send(line + "\n", after(5s)), 0);
    const auto lines = c.read_until_close(after(5s)).lines();
    ASSERT_EQ(lines.size(), 1u) << line;
    EXPECT_EQ(json::parse(lines[0], nullptr, false), json({{"ok", false}, {"error", error}})) << lines[0];
  }
  // And serves on: the next message arrives.
  CommandResult after_all = lbctl({"send", "0", "still here"});
  EXPECT_TRUE(after_all.exited(0)) << after_all.describe();
  std::string last;
  EXPECT_TRUE(answers(address(), 0, "200 still here\n", last, after(10s))) << last;
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

TEST_F(Send, AWorkerThatDoesNotReadGetsNoMoreThanItsChannelHoldsAndLbdDoesNotWait) {
  ASSERT_NO_FATAL_FAILURE(start_controlled(lbd_flags("reuseport", 2, {"--demo-routes"})));
  const pid_t stopped = serving_pids().at(1);
  ASSERT_TRUE(stop_process(stopped, after(5s)));
  // Its channel fills: lbctl says so, by slot and pid, and exits 1; lbd answers at once throughout.
  const std::string text(4000, 'm');
  unsigned delivered = 0;
  CommandResult r;
  for (int i = 0; i < 200; i++) {
    r = lbctl({"send", "1", text + std::to_string(i)}, after(5s));
    ASSERT_FALSE(r.timed_out) << "lbd waited on a stopped worker";
    if (!r.exited(0)) break;
    delivered++;
  }
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_EQ(r.out, "sent to 0 of 1 worker(s)\n") << r.describe();
  EXPECT_NE(r.err.find("lbctl: not delivered to slot 1 (pid " + std::to_string(stopped) + "): its channel is full"),
            std::string::npos)
      << r.describe();
  EXPECT_GE(delivered, 4u) << "the channel holds some messages";
  CommandResult status = lbctl({"status"}, after(5s));
  EXPECT_TRUE(status.exited(0)) << status.describe();
  CommandResult all = lbctl({"send", "--all", "--json", "partly"}, after(5s));
  EXPECT_TRUE(all.exited(1)) << all.describe();
  const json answer = json::parse(all.out, nullptr, false);
  EXPECT_EQ(answer.value("sent", json()), json::array({0})) << all.out;
  EXPECT_EQ(answer["undelivered"][0].value("slot", -1), 1) << all.out;

  // Resumed, it reads what waited, in order, and takes messages again.
  kill(stopped, SIGCONT);
  EXPECT_TRUE(lbd().wait_for_log(R"(\[worker 1\] message: m+)" + std::to_string(delivered - 1) + "$", after(10s)))
      << lbd().log();
  EXPECT_TRUE(eventually(after(10s), [&] { return lbctl({"send", "1", "awake"}, after(5s)).exited(0); }));
  std::string last;
  EXPECT_TRUE(answers(address(), 1, "200 awake\n", last, after(10s))) << last;
  // Messages never took the room its drain needs.
  EXPECT_TRUE(lbctl({"drain", "1", "--wait"}).exited(0));
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

// --- exec mode: a program reads its messages from $LBD_MESSAGE_FD ---------------------------------

class SendToPrograms : public ExecTest {
 protected:
  const std::vector<std::string> kMessageServer = {"/usr/bin/python3", std::string(FIXTURES_DIR) + "/message_server.py"};
};

TEST_F(SendToPrograms, AProgramReadsEachMessageAsALineFromLbdMessageFd) {
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "2", "--wait-ready"}, kMessageServer));
  // One listener (fd 3), the kept read ends of its stdout and stderr (4, 5): messages on fd 6.
  EXPECT_TRUE(eventually(after(5s), [&] { return count_records("serving on fd 3, messages on fd 6") == 2; }))
      << testing::PrintToString(log_records());
  EXPECT_EQ(last_message_of(address(), 1, after(10s)), "404 no message yet\n");

  CommandResult one = lbctl({"send", "1", "h\xc3\xa9llo, program one"});
  ASSERT_TRUE(one.exited(0)) << one.describe();
  EXPECT_EQ(one.out, "sent to 1 of 1 worker(s) (slot 1)\n");
  std::string last;
  EXPECT_TRUE(answers(address(), 1, "200 h\xc3\xa9llo, program one\n", last, after(10s))) << last;
  EXPECT_EQ(last_message_of(address(), 0, after(10s)), "404 no message yet\n");

  // Several in a row arrive as as many lines, in order, whole.
  for (int i = 0; i < 20; i++) ASSERT_TRUE(lbctl({"send", "--all", "line " + std::to_string(i)}).exited(0));
  for (int slot : {0, 1}) EXPECT_TRUE(answers(address(), slot, "200 line 19\n", last, after(10s))) << last;
  EXPECT_TRUE(eventually(after(5s), [&] { return count_records(" out message: line ") == 40; }))
      << testing::PrintToString(log_records());
  std::vector<std::string> read;
  for (const auto& record : log_records()) {
    if (const size_t at = record.find(" app 0 out message: "); at != std::string::npos) read.push_back(record.substr(at + 20));
  }
  std::vector<std::string> sent;  // in order, whole, and not the first one, which named slot 1
  for (int i = 0; i < 20; i++) sent.push_back("line " + std::to_string(i));
  EXPECT_EQ(read, sent);
}

TEST_F(SendToPrograms, NodeReadsThemAsTheReadmeShows) {
  if (!on_path("node")) GTEST_SKIP() << "needs Node.js";
  ASSERT_NO_FATAL_FAILURE(start_program({"--mode", "reuseport", "-i", "1", "--ready-delay", "0.5"},
                                        {"node", std::string(FIXTURES_DIR) + "/node_messages.js"}));
  ASSERT_TRUE(lbctl({"send", "0", "hello, node"}).exited(0));
  std::string last;
  EXPECT_TRUE(answers(address(), 0, "200 hello, node\n", last, after(10s))) << last;
  // It still stops on SIGTERM at once (a read blocked on the thread pool would hold process.exit).
  CommandResult drained = lbctl({"drain", "0", "--wait", "--timeout", "20"}, after(30s));
  EXPECT_TRUE(drained.exited(0)) << drained.describe();
  EXPECT_EQ(lbd().count_log("killing"), 0u) << lbd().log();
}

TEST_F(SendToPrograms, AProgramThatNeverReadsDoesNotStallLbd) {
  // sleep inherits the pipe's read end and never reads it.
  ASSERT_NO_FATAL_FAILURE(
      start_program({"--mode", "reuseport", "-i", "2", "--ready-delay", "0.1"}, {"/bin/sh", "-c", "exec sleep 600"}));
  const auto pids = serving_pids();
  ASSERT_EQ(pids.size(), 2u);
  const std::string text(4000, 'p');
  unsigned delivered = 0;
  CommandResult r;
  for (int i = 0; i < 100; i++) {
    r = lbctl({"send", "--all", text}, after(5s));
    ASSERT_FALSE(r.timed_out) << "lbd waited on a program that does not read";
    if (!r.exited(0)) break;
    delivered++;
  }
  // A pipe holds 64 KiB: 16 lines of 4001 bytes, one to a page; then every one is refused.
  EXPECT_EQ(delivered, 16u);
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_EQ(r.out, "sent to 0 of 2 worker(s)\n") << r.describe();
  for (auto [slot, pid] : pids) {
    EXPECT_NE(r.err.find("lbctl: not delivered to slot " + std::to_string(slot) + " (pid " + std::to_string(pid) +
                         "): its message pipe is full: the program is not reading $LBD_MESSAGE_FD\n"),
              std::string::npos)
        << r.describe();
  }
  for (int i = 0; i < 50; i++) {
    // (A short line would still fit in the last page's room.)
    CommandResult more = lbctl({"send", "0", text}, after(5s));
    ASSERT_TRUE(more.exited(1)) << more.describe();
  }
  const auto before = Clock::now();
  CommandResult status = lbctl({"status"}, after(5s));
  EXPECT_TRUE(status.exited(0)) << status.describe();
  EXPECT_LT(Clock::now() - before, 2s) << "lbctl status was slow behind the full pipes";
  EXPECT_EQ(lbd().count_log(R"(message not delivered to worker 0 \(pid [0-9]+\): its message pipe is full)"), 51u)
      << lbd().log();
}

TEST_F(SendToPrograms, AProgramThatClosedItsMessageFdIsReportedSo) {
  // The program closes the fd first and only then says READY=1 (--wait-ready: no delay counts), and
  // lbd's ready line comes only once it has: so the one send below is sure to find the pipe closed.
  const std::string program =
      "import os, socket, time\n"
      "os.close(int(os.environ['LBD_MESSAGE_FD']))\n"
      "to = os.environ['NOTIFY_SOCKET']\n"
      "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', '\\0' + to[1:] if to[0] == '@' else to)\n"
      "time.sleep(600)\n";
  ASSERT_NO_FATAL_FAILURE(
      start_program({"--mode", "reuseport", "-i", "1", "--wait-ready"}, {"/usr/bin/python3", "-c", program}));
  const pid_t pid = serving_pids().at(0);
  CommandResult r = lbctl({"send", "0", "anyone?"});
  EXPECT_TRUE(r.exited(1)) << r.describe();
  EXPECT_EQ(r.err, "lbctl: not delivered to slot 0 (pid " + std::to_string(pid) +
                       "): the program has closed $LBD_MESSAGE_FD\n");
  EXPECT_EQ(lbd().count_log(kTroubleInLog), 0u) << lbd().log();
}

}  // namespace
}  // namespace lbd::test
