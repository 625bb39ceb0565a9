// The slot and process state machine (userspace/supervisor/slot_manager.h), driven directly:
// events in, effects recorded by a fake, time passed by hand. Every sequence the supervisor
// lives through (reloads that fail in each way, crashes during reloads, scale-down while
// draining, a drain that hangs, memory replacement and its backoff, restart backoff and the
// crash-loop guard, stopping) runs here in microseconds, with no process, socket or root.
#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "supervisor/slot_manager.h"

namespace lbd {
namespace {

using namespace std::chrono_literals;
using control::Request;
using control::Verb;

const Clock::time_point T0 = Clock::time_point(std::chrono::hours(1000));

const char* state_name(SlotState state) {
  switch (state) {
    case SlotState::kEmpty: return "empty";
    case SlotState::kStarting: return "starting";
    case SlotState::kActive: return "active";
    case SlotState::kDraining: return "draining";
  }
  return "?";
}

// Records every effect as one line, and plays the world: pids, failing spawns and swaps.
class FakeEffects : public SlotEffects {
 public:
  Result<pid_t> spawn(ProcessId id, uint32_t slot, int cpu, bool replacement) override {
    if (fail_spawn) return Error::from_errno(EMFILE, "fork");
    const pid_t pid = next_pid++;
    pids[id] = pid;
    record("spawn " + std::to_string(id) + " slot " + std::to_string(slot) + " cpu " + std::to_string(cpu) +
           (replacement ? " replacement" : ""));
    return pid;
  }
  Result<void> swap_in(ProcessId id, uint32_t slot, std::optional<ProcessId> previous) override {
    if (fail_swap) return Error::from_errno(ENOENT, "update sockarray");
    record("swap " + std::to_string(id) + " slot " + std::to_string(slot) +
           (previous ? " from " + std::to_string(*previous) : ""));
    return {};
  }
  void serving(ProcessId id) override { record("serving " + std::to_string(id)); }
  void retire(ProcessId id, DrainMode how, std::chrono::milliseconds timeout,
              std::optional<ProcessId> successor) override {
    record("retire " + std::to_string(id) + " " + drain_mode_name(how) + " " + std::to_string(timeout.count()) + "ms" +
           (successor ? " to " + std::to_string(*successor) : ""));
  }
  void hurry(ProcessId id, std::chrono::milliseconds) override { record("hurry " + std::to_string(id)); }
  void kill(ProcessId id) override { record("kill " + std::to_string(id)); }
  void slot_added(uint32_t slot, int) override { record("add slot " + std::to_string(slot)); }
  void set_slot_count(uint32_t count) override { record("slot count " + std::to_string(count)); }
  void set_slot_state(uint32_t slot, SlotState state) override {
    states[slot] = state;  // a state is recorded only when it changes: the table sees every update
    if (last_state.count(slot) && last_state[slot] == state) return;
    last_state[slot] = state;
    record("state " + std::to_string(slot) + " " + state_name(state));
  }
  void progress(ClientId client, const std::string& message) override {
    record("progress " + std::to_string(client) + ": " + message);
  }
  void finish_ok(ClientId client, const nlohmann::json& result) override {
    record("ok " + std::to_string(client) + " " + result.dump());
  }
  void finish_error(ClientId client, const std::string& message) override {
    record("error " + std::to_string(client) + ": " + message);
  }
  void all_ready(size_t active) override { record("all ready " + std::to_string(active)); }
  void stopping(bool graceful) override { record(graceful ? "stopping gracefully" : "stopping now"); }

  void record(std::string line) { lines.push_back(std::move(line)); }
  // Every line recorded since the last call.
  std::vector<std::string> take() { return std::exchange(lines, {}); }

  std::vector<std::string> lines;
  std::map<ProcessId, pid_t> pids;
  std::map<uint32_t, SlotState> states, last_state;
  pid_t next_pid = 100;
  bool fail_spawn = false;
  bool fail_swap = false;
};

// Lines that start with `prefix`, in order.
std::vector<std::string> starting_with(const std::vector<std::string>& lines, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& line : lines) {
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
  }
  return out;
}

bool contains(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// Where `line` is in `lines`, or -1.
int position(const std::vector<std::string>& lines, const std::string& line) {
  auto it = std::find(lines.begin(), lines.end(), line);
  return it == lines.end() ? -1 : static_cast<int>(it - lines.begin());
}

// What the manager logs, for the messages operators read.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_st>(text_));
    logger->set_pattern("%l %v");
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return text_.str(); }
  bool has(const std::string& fragment) const { return text().find(fragment) != std::string::npos; }

 private:
  std::ostringstream text_;
  std::shared_ptr<spdlog::logger> previous_;
};

SlotManagerConfig config_for(uint32_t workers) {
  SlotManagerConfig config;
  config.workers = workers;
  config.cpus = {0, 1};
  config.shutdown_timeout = 10s;
  config.ready_timeout = 30s;
  config.reload_source = "/usr/sbin/lbd";
  return config;
}

class SlotManagerTest : public ::testing::Test {
 protected:
  // Starts `workers` slots and makes each one's process ready; the effects so far are dropped.
  void start_serving(uint32_t workers, SlotManagerConfig config) {
    manager_.emplace(std::move(config), fx_);
    ASSERT_TRUE(manager_->start(T0));
    for (const auto* p : manager_->processes()) manager_->on_ready(p->id, T0 + 10ms);
    fx_.take();
    ASSERT_EQ(manager_->slots().size(), workers);
  }
  void start_serving(uint32_t workers) { start_serving(workers, config_for(workers)); }

  const ProcessRecord& serving(uint32_t slot) const { return *manager_->slots().at(slot).serving; }
  const ProcessRecord& replacement(uint32_t slot) const { return *manager_->slots().at(slot).replacement; }
  Request drain_request(uint32_t slot, bool wait, std::optional<double> timeout_s = std::nullopt) {
    Request r;
    r.verb = Verb::kDrain;
    r.slot = slot;
    r.wait = wait;
    r.timeout_s = timeout_s;
    return r;
  }

  FakeEffects fx_;
  std::optional<SlotManager> manager_;
};

// --- start ------------------------------------------------------------------------------------

TEST_F(SlotManagerTest, StartsOneProcessPerSlotAndIsReadyOnlyWhenEveryOneServes) {
  manager_.emplace(config_for(2), fx_);
  ASSERT_TRUE(manager_->start(T0));
  auto lines = fx_.take();
  EXPECT_EQ(starting_with(lines, "spawn"), (std::vector<std::string>{"spawn 1 slot 0 cpu 0", "spawn 2 slot 1 cpu 1"}));
  EXPECT_LT(position(lines, "add slot 1"), position(lines, "spawn 1 slot 0 cpu 0"))
      << "every slot exists before the first process starts (a program reads LB_WORKERS)";
  EXPECT_EQ(fx_.states[0], SlotState::kStarting);

  manager_->on_ready(1, T0 + 5ms);
  lines = fx_.take();
  EXPECT_EQ(lines, (std::vector<std::string>{"swap 1 slot 0", "serving 1", "state 0 active"}));
  EXPECT_EQ(manager_->not_ready_because(), "");

  manager_->on_ready(2, T0 + 6ms);
  EXPECT_TRUE(contains(fx_.take(), "all ready 2"));
  manager_->on_ready(2, T0 + 7ms);
  EXPECT_TRUE(fx_.take().empty()) << "a second ready from a serving process changes nothing";
}

TEST_F(SlotManagerTest, AStartThatCannotSpawnIsAnErrorNamingTheWorker) {
  manager_.emplace(config_for(2), fx_);
  fx_.fail_spawn = true;
  auto started = manager_->start(T0);
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().message(), "start worker 0: fork: Too many open files");
}

TEST_F(SlotManagerTest, AProcessThatCannotBeSteeredToIsKilledAndRestarted) {
  LogCapture log;
  manager_.emplace(config_for(1), fx_);
  ASSERT_TRUE(manager_->start(T0));
  fx_.take();
  fx_.fail_swap = true;
  manager_->on_ready(1, T0 + 5ms);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"kill 1"}));
  EXPECT_TRUE(log.has("worker 0: update sockarray: No such file or directory; stopping pid 100"));
  manager_->on_ready(1, T0 + 6ms);
  EXPECT_TRUE(fx_.take().empty()) << "a killed process never serves";
  manager_->on_exit(1, "was killed by signal 9 (SIGKILL)", T0 + 7ms);
  EXPECT_TRUE(log.has("worker 0 (pid 100) failed to start: was killed by signal 9 (SIGKILL); restarting in 100 ms"));
}

// --- reload -----------------------------------------------------------------------------------

TEST_F(SlotManagerTest, ReloadReplacesSlotBySlotSwappingBeforeTheOldOneRetires) {
  start_serving(2);
  manager_->reload(7, 1, std::nullopt, T0 + 1s);
  auto lines = fx_.take();
  EXPECT_EQ(lines, (std::vector<std::string>{"progress 7: reloading 2 worker(s) from /usr/sbin/lbd",
                                             "spawn 3 slot 0 cpu 0 replacement",
                                             "progress 7: slot 0: starting pid 102 to replace pid 100"}));
  EXPECT_EQ(manager_->operation(), Verb::kReload);

  manager_->on_ready(3, T0 + 1100ms);
  lines = fx_.take();
  EXPECT_EQ(lines, (std::vector<std::string>{"swap 3 slot 0 from 1", "retire 1 handover 10000ms to 3", "serving 3",
                                             "progress 7: slot 0: pid 102 serving", "spawn 4 slot 1 cpu 1 replacement",
                                             "progress 7: slot 1: starting pid 103 to replace pid 101"}));
  EXPECT_EQ(fx_.states[0], SlotState::kActive) << "the slot never left ACTIVE";
  EXPECT_EQ(serving(0).pid, 102);
  ASSERT_EQ(manager_->slots()[0].retiring.size(), 1u);

  manager_->on_exit(1, "exited with status 0", T0 + 1200ms);
  manager_->on_ready(4, T0 + 1300ms);
  lines = fx_.take();
  EXPECT_EQ(lines.back(), R"(ok 7 {"seconds":0.3,"slots":2,"verb":"reload"})");
  EXPECT_EQ(manager_->reloads(), 1u);
  EXPECT_FALSE(manager_->operation());
}

TEST_F(SlotManagerTest, AReloadWhoseNewWorkerDiesLeavesTheOldOneServingAndStops) {
  LogCapture log;
  start_serving(2);
  manager_->reload(7, 1, std::nullopt, T0 + 1s);
  fx_.take();
  manager_->on_exit(3, "exited with status 1", T0 + 1100ms);
  auto lines = fx_.take();
  EXPECT_EQ(starting_with(lines, "spawn"), std::vector<std::string>{}) << "the rollout stops at the first failure";
  EXPECT_EQ(starting_with(lines, "retire"), std::vector<std::string>{}) << "the old worker keeps serving";
  EXPECT_EQ(lines.back(), "error 7: reload failed: slot 0: new worker pid 102 exited with status 1 before it was "
                          "ready; pid 100 keeps serving");
  EXPECT_EQ(serving(0).pid, 100);
  EXPECT_EQ(fx_.states[0], SlotState::kActive);
  EXPECT_EQ(manager_->reload_failures(), 1u);
  EXPECT_TRUE(log.has("reload failed after 0.1 s"));
}

TEST_F(SlotManagerTest, AReloadWhoseNewWorkerIsNeverReadyKillsItAtItsTimeout) {
  start_serving(1);
  manager_->reload(7, 1, 2s, T0 + 1s);
  fx_.take();
  EXPECT_EQ(manager_->next_deadline(), T0 + 3s);
  manager_->tick(T0 + 2999ms);
  EXPECT_TRUE(fx_.take().empty());
  manager_->tick(T0 + 3s);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"kill 2"}));
  manager_->on_exit(2, "was killed by signal 9 (SIGKILL)", T0 + 3001ms);
  EXPECT_EQ(fx_.take().back(), "error 7: reload failed: slot 0: new worker pid 101 was not ready within 2.0 s "
                               "(killed); pid 100 keeps serving");
  EXPECT_EQ(serving(0).pid, 100);
}

TEST_F(SlotManagerTest, ACrashDuringAReloadHandsTheSlotToTheReplacement) {
  LogCapture log;
  start_serving(1);
  manager_->reload(7, 1, std::nullopt, T0 + 1s);
  fx_.take();
  manager_->on_exit(1, "was killed by signal 11 (SIGSEGV)", T0 + 1050ms);
  EXPECT_TRUE(log.has("worker 0 (pid 100) crashed: was killed by signal 11 (SIGSEGV); its replacement pid 101 takes over"));
  EXPECT_EQ(fx_.states[0], SlotState::kStarting);
  EXPECT_FALSE(manager_->slots()[0].restart_at) << "no restart: the replacement is already starting";
  fx_.take();
  manager_->on_ready(2, T0 + 1100ms);
  auto lines = fx_.take();
  EXPECT_EQ(starting_with(lines, "retire"), std::vector<std::string>{}) << "nothing left to retire";
  EXPECT_TRUE(contains(lines, "swap 2 slot 0"));
  EXPECT_EQ(lines.back(), R"(ok 7 {"seconds":0.1,"slots":1,"verb":"reload"})");
  EXPECT_EQ(manager_->slots()[0].restart_count, 0u);
}

TEST_F(SlotManagerTest, ReloadInParallelAndBringsBackADrainedSlot) {
  start_serving(3);
  manager_->drain(5, drain_request(2, false), T0 + 1s);
  manager_->on_exit(3, "exited with status 0", T0 + 1100ms);
  fx_.take();
  manager_->reload(7, 2, std::nullopt, T0 + 2s);
  auto lines = fx_.take();
  EXPECT_EQ(starting_with(lines, "spawn"),
            (std::vector<std::string>{"spawn 4 slot 0 cpu 0 replacement", "spawn 5 slot 1 cpu 1 replacement"}))
      << "two at a time";
  manager_->on_ready(4, T0 + 2100ms);
  lines = fx_.take();
  EXPECT_TRUE(contains(lines, "spawn 6 slot 2 cpu 0")) << lines.size();
  EXPECT_TRUE(contains(lines, "progress 7: slot 2: starting pid 105 (the slot was down)"));
  manager_->on_ready(5, T0 + 2200ms);
  manager_->on_ready(6, T0 + 2300ms);
  EXPECT_EQ(fx_.take().back(), R"(ok 7 {"seconds":0.3,"slots":3,"verb":"reload"})");
  EXPECT_TRUE(manager_->slots()[2].active());
}

TEST_F(SlotManagerTest, OneOperationAtATime) {
  start_serving(2);
  manager_->reload(7, 1, std::nullopt, T0 + 1s);
  fx_.take();
  manager_->scale(8, 3, T0 + 1s);
  manager_->undrain(9, Request{.verb = Verb::kUndrain, .all = true}, T0 + 1s);
  manager_->restart(10, 0, std::nullopt, T0 + 1s);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"error 8: busy: a reload is in progress",
                                                  "error 9: busy: a reload is in progress",
                                                  "error 10: busy: a reload is in progress"}));
  LogCapture log;
  manager_->reload(std::nullopt, 1, std::nullopt, T0 + 1s);
  EXPECT_TRUE(log.has("SIGHUP: a reload is in progress; not reloading"));
  manager_->drain(11, drain_request(9, false), T0 + 1s);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"error 11: no such slot: 9 (slots are 0-1)"}));
}

// --- drain and scale ----------------------------------------------------------------------------

TEST_F(SlotManagerTest, DrainTakesTheSlotOutOfSteeringBeforeItsWorkerIsTold) {
  start_serving(2);
  manager_->drain(5, drain_request(1, false), T0 + 1s);
  auto lines = fx_.take();
  EXPECT_EQ(lines, (std::vector<std::string>{"state 1 draining", "retire 2 drain 10000ms", R"(ok 5 {"drained":[1]})"}));
  manager_->on_exit(2, "exited with status 0", T0 + 2s);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"state 1 empty"}));
  EXPECT_FALSE(manager_->slots()[1].restart_at) << "a drained worker's exit is no crash";
}

TEST_F(SlotManagerTest, ADrainThatHangsIsKilledAtItsDeadlineAndTheWaitEnds) {
  start_serving(2);
  manager_->drain(5, drain_request(0, true, 1.0), T0 + 1s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "retire 1 drain 1000ms"));
  EXPECT_EQ(lines.back(), "progress 5: draining 1 worker(s)");
  // The worker is stopped (SIGSTOP, a deadlock): it never exits on its own. It gets its timeout
  // and two seconds of grace.
  manager_->tick(T0 + 3999ms);
  EXPECT_TRUE(fx_.take().empty());
  manager_->tick(T0 + 4s);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"kill 1"}));
  manager_->on_exit(1, "was killed by signal 9 (SIGKILL)", T0 + 4001ms);
  lines = fx_.take();
  EXPECT_TRUE(contains(lines, "progress 5: slot 0: drained"));
  EXPECT_EQ(lines.back(), R"(ok 5 {"seconds":3.001,"slots":1,"verb":"drain"})");
}

TEST_F(SlotManagerTest, ScaleDownWhileASlotIsDrainingRemovesSlotsOnlyOnceTheirProcessesExit) {
  start_serving(3);
  manager_->drain(5, drain_request(2, false), T0 + 1s);  // slot 2 draining, its worker still finishing
  fx_.take();
  manager_->scale(6, 1, T0 + 2s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "retire 2 drain 10000ms")) << "slot 1 drains";
  EXPECT_EQ(starting_with(lines, "slot count"), std::vector<std::string>{}) << "no slot can go yet";
  ASSERT_EQ(manager_->slots().size(), 3u);

  // Slot 1's worker exits first: slot 2, above it, still holds a process, so nothing goes.
  manager_->on_exit(2, "exited with status 0", T0 + 3s);
  EXPECT_EQ(manager_->slots().size(), 3u);
  EXPECT_EQ(starting_with(fx_.take(), "ok"), std::vector<std::string>{});
  // Then slot 2's: both go, from the top, and the scale is done.
  manager_->on_exit(3, "exited with status 0", T0 + 4s);
  lines = fx_.take();
  EXPECT_EQ(manager_->slots().size(), 1u);
  EXPECT_TRUE(contains(lines, "slot count 1"));
  EXPECT_EQ(lines.back(), R"(ok 6 {"seconds":2.0,"slots":2,"verb":"scale"})");

  // Up again: new slots, pinned round the CPUs.
  manager_->scale(7, 3, T0 + 5s);
  lines = fx_.take();
  EXPECT_EQ(starting_with(lines, "spawn"), (std::vector<std::string>{"spawn 4 slot 1 cpu 1", "spawn 5 slot 2 cpu 0"}));
}

TEST_F(SlotManagerTest, UndrainStartsADrainedSlotAndReportsWhenItServes) {
  start_serving(2);
  manager_->drain(5, drain_request(0, false), T0 + 1s);
  manager_->on_exit(1, "exited with status 0", T0 + 1100ms);
  fx_.take();
  EXPECT_EQ(manager_->not_ready_because(), "");
  manager_->undrain(6, Request{.verb = Verb::kUndrain, .slot = 0}, T0 + 2s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "spawn 3 slot 0 cpu 0"));
  EXPECT_EQ(lines.back(), "progress 6: slot 0: starting pid 102");
  manager_->on_ready(3, T0 + 2100ms);
  EXPECT_EQ(fx_.take().back(), R"(ok 6 {"seconds":0.1,"slots":1,"verb":"undrain"})");
}

TEST_F(SlotManagerTest, ReadinessSaysWhyNotWhenEverySlotIsDrained) {
  start_serving(1);
  manager_->drain(5, drain_request(0, false), T0 + 1s);
  EXPECT_EQ(manager_->not_ready_because(), "every worker is drained");
  manager_->stop(true, T0 + 2s);
  EXPECT_EQ(manager_->not_ready_because(), "lbd is stopping");
}

// --- crashes ----------------------------------------------------------------------------------

TEST_F(SlotManagerTest, RestartsBackOffAndTheCrashLoopGuardGivesUp) {
  LogCapture log;
  SlotManagerConfig config = config_for(1);
  config.max_restarts = 4;
  start_serving(1, config);
  auto now = T0 + 1s;
  const std::vector<int> delays_ms = {100, 200, 400};
  for (size_t crash = 0; crash < delays_ms.size(); crash++) {
    const ProcessId id = serving(0).id;
    manager_->on_exit(id, "was killed by signal 9 (SIGKILL)", now);
    EXPECT_EQ(fx_.states[0], SlotState::kEmpty) << "crash " << crash;
    EXPECT_EQ(manager_->next_deadline(), now + std::chrono::milliseconds(delays_ms[crash]));
    manager_->tick(now + std::chrono::milliseconds(delays_ms[crash] - 1));
    EXPECT_EQ(starting_with(fx_.take(), "spawn"), std::vector<std::string>{}) << "not before its delay";
    now += std::chrono::milliseconds(delays_ms[crash]);
    manager_->tick(now);
    EXPECT_EQ(starting_with(fx_.take(), "spawn").size(), 1u) << "crash " << crash;
    manager_->on_ready(serving(0).id, now);
    now += 10ms;
  }
  EXPECT_EQ(manager_->slots()[0].restart_count, 3u);
  EXPECT_EQ(manager_->total_restarts(0), 3u);
  EXPECT_TRUE(log.has("worker 0 (pid 100) crashed: was killed by signal 9 (SIGKILL); restarting in 100 ms"));

  manager_->on_exit(serving(0).id, "exited with status 3", now);
  EXPECT_TRUE(log.has("crashed: exited with status 3; it crashed 4 times within 60 s, not restarting it"));
  EXPECT_TRUE(manager_->slots()[0].failed);
  EXPECT_FALSE(manager_->next_deadline());
  EXPECT_TRUE(manager_->all_failed()) << "lbd exits when every slot has failed";
}

TEST_F(SlotManagerTest, ARestartThatCannotSpawnBacksOffLikeACrash) {
  start_serving(1);
  manager_->on_exit(1, "was killed by signal 9 (SIGKILL)", T0 + 1s);
  fx_.fail_spawn = true;
  manager_->tick(T0 + 1100ms);
  EXPECT_EQ(manager_->next_deadline(), T0 + 1100ms + 200ms);
  fx_.fail_spawn = false;
  manager_->tick(T0 + 1300ms);
  EXPECT_TRUE(manager_->slots()[0].serving);
}

// --- --max-memory ---------------------------------------------------------------------------------

TEST_F(SlotManagerTest, MaxMemoryReplacesAWorkerNewFirstAndBacksOffWhenItKeepsHappening) {
  LogCapture log;
  SlotManagerConfig config = config_for(1);
  config.max_memory = 100 << 20;
  start_serving(1, config);
  auto now = T0 + 60s;
  manager_->on_memory_sample(serving(0).id, 50 << 20, now);
  EXPECT_TRUE(fx_.take().empty()) << "under the limit";

  // Each replacement is over the limit as soon as it serves: the slot waits 2, 4, 8 s between
  // replacements, counted from the new process's start.
  const std::vector<std::chrono::seconds> quiet = {2s, 4s, 8s};
  for (size_t round = 0; round < quiet.size(); round++) {
    manager_->on_memory_sample(serving(0).id, 200 << 20, now);
    auto lines = fx_.take();
    ASSERT_EQ(starting_with(lines, "spawn").size(), 1u) << "round " << round;
    const ProcessId fresh = replacement(0).id;
    manager_->on_memory_sample(serving(0).id, 200 << 20, now + 1ms);
    EXPECT_EQ(starting_with(fx_.take(), "spawn").size(), 0u) << "one replacement at a time";
    manager_->on_ready(fresh, now + 10ms);
    EXPECT_TRUE(contains(fx_.take(), "retire " + std::to_string(fresh - 1) + " handover 10000ms to " +
                                         std::to_string(fresh)));
    manager_->on_memory_sample(fresh, 200 << 20, now + quiet[round] - 1ms);
    EXPECT_EQ(starting_with(fx_.take(), "spawn").size(), 0u) << "round " << round << ": not within its quiet time";
    now += quiet[round] + 10ms;
  }
  EXPECT_TRUE(log.has("3 replacements in 10 min; next look in 8 s"));
  EXPECT_EQ(manager_->memory_replacements(), 3u);
}

// --- stopping ----------------------------------------------------------------------------------

TEST_F(SlotManagerTest, AGracefulStopRetiresEveryWorkerAndKillsWhatRemainsAtTheDeadline) {
  start_serving(2);
  manager_->drain(5, drain_request(1, false), T0 + 1s);  // already draining when the stop comes
  fx_.take();
  manager_->stop(true, T0 + 2s);
  auto lines = fx_.take();
  EXPECT_EQ(lines.front(), "stopping gracefully");
  EXPECT_TRUE(contains(lines, "retire 1 stop 10000ms"));
  EXPECT_TRUE(contains(lines, "hurry 2")) << "the one already draining closes its idle connections now";
  EXPECT_FALSE(manager_->finished());
  manager_->tick(T0 + 12s);
  lines = fx_.take();
  EXPECT_TRUE(contains(lines, "kill 1"));
  EXPECT_TRUE(contains(lines, "kill 2"));
  manager_->on_exit(1, "was killed by signal 9 (SIGKILL)", T0 + 12s);
  manager_->on_exit(2, "was killed by signal 9 (SIGKILL)", T0 + 12s);
  EXPECT_TRUE(manager_->finished());
  EXPECT_FALSE(manager_->all_failed());
  EXPECT_FALSE(manager_->slots()[0].restart_at) << "nothing restarts while stopping";
}

TEST_F(SlotManagerTest, AStopAnswersTheOperationInProgressAndASecondStopKillsAtOnce) {
  start_serving(1);
  manager_->reload(7, 1, std::nullopt, T0 + 1s);
  fx_.take();
  manager_->stop(true, T0 + 2s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "error 7: lbd is stopping"));
  EXPECT_TRUE(contains(lines, "kill 2")) << "a starting replacement has nothing to finish";
  manager_->stop(false, T0 + 3s);
  EXPECT_TRUE(contains(fx_.take(), "kill 1"));
}

// --- leaving a balancer (drain_grace) ---------------------------------------------------------

SlotManagerConfig config_with_grace(uint32_t workers) {
  SlotManagerConfig config = config_for(workers);
  config.drain_grace = 10s;
  config.drain_quiet = 1s;
  return config;
}

Request drain_all_request(bool wait) {
  Request r;
  r.verb = Verb::kDrain;
  r.all = true;
  r.wait = wait;
  return r;
}

TEST_F(SlotManagerTest, DrainAllWithAGraceIsNotReadyAtOnceButDrainsOnlyOnceTheToldBalancerGoesQuiet) {
  start_serving(2, config_with_grace(2));
  manager_->drain(5, drain_all_request(false), T0 + 1s);
  auto lines = fx_.take();
  ASSERT_EQ(lines.size(), 1u) << ::testing::PrintToString(lines);
  EXPECT_EQ(lines[0].rfind("progress 5: not ready from now", 0), 0u) << lines[0];
  EXPECT_TRUE(manager_->leaving());
  EXPECT_FALSE(manager_->not_ready_because().empty()) << "/readyz and the agent say so from the first moment";
  EXPECT_TRUE(manager_->has_active_slot()) << "the workers still serve";
  EXPECT_EQ(fx_.states[0], SlotState::kActive);
  EXPECT_EQ(fx_.states[1], SlotState::kActive);

  // Connections keep coming, and no balancer has asked yet: nothing happens.
  manager_->on_traffic(T0 + 3s);
  manager_->tick(T0 + 5s);
  EXPECT_TRUE(fx_.take().empty());
  // The balancer is told; what it chose just before still arrives; then it is quiet for 1 s.
  manager_->on_balancer_told(T0 + 5s);
  manager_->on_traffic(T0 + 5500ms);
  EXPECT_EQ(manager_->next_deadline(), T0 + 6500ms);
  manager_->tick(T0 + 6499ms);
  EXPECT_TRUE(fx_.take().empty());
  manager_->tick(T0 + 6500ms);
  lines = fx_.take();
  EXPECT_FALSE(manager_->leaving());
  EXPECT_EQ(lines.front(), "progress 5: balancers stopped sending; draining the workers");
  EXPECT_LT(position(lines, "state 0 draining"), position(lines, "retire 1 drain 10000ms"));
  EXPECT_LT(position(lines, "state 1 draining"), position(lines, "retire 2 drain 10000ms"));
  EXPECT_EQ(lines.back(), R"(ok 5 {"drained":[0,1]})");
}

TEST_F(SlotManagerTest, DrainAllWaitsTheWholeGraceWhenNoBalancerAsksOrConnectionsNeverStop) {
  start_serving(1, config_with_grace(1));
  LogCapture log;
  manager_->drain(5, drain_all_request(true), T0 + 1s);
  fx_.take();
  manager_->tick(T0 + 10999ms);
  EXPECT_TRUE(fx_.take().empty()) << "nobody was told: only time ends the grace";
  manager_->tick(T0 + 11s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "retire 1 drain 10000ms"));
  EXPECT_TRUE(log.has("the grace passed and no balancer asked"));
  EXPECT_EQ(lines.back(), "progress 5: draining 1 worker(s)") << "--wait goes on until the workers exit";
  manager_->on_exit(1, "exited with status 0", T0 + 12s);
  EXPECT_EQ(fx_.take().back(), R"(ok 5 {"seconds":1.0,"slots":1,"verb":"drain"})");

  // Told, but connections keep arriving: the grace still ends at its bound.
  start_serving(1, config_with_grace(1));
  manager_->drain(6, drain_all_request(false), T0 + 20s);
  manager_->on_balancer_told(T0 + 21s);
  for (auto t = T0 + 21s; t < T0 + 30s; t += 500ms) {
    manager_->on_traffic(t);
    manager_->tick(t);
  }
  EXPECT_TRUE(manager_->leaving());
  manager_->tick(T0 + 30s);
  EXPECT_FALSE(manager_->leaving());
  EXPECT_TRUE(log.has("the grace passed with connections still arriving"));
}

TEST_F(SlotManagerTest, WhileTheBalancerIsToldOtherVerbsAreBusyAndUndrainCallsTheDrainOff) {
  start_serving(2, config_with_grace(2));
  manager_->drain(5, drain_all_request(false), T0 + 1s);
  fx_.take();
  manager_->reload(6, 1, std::nullopt, T0 + 2s);
  manager_->drain(7, drain_request(0, false), T0 + 2s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "error 6: busy: a drain --all is in progress (balancers are told first)"));
  EXPECT_TRUE(contains(lines, "error 7: busy: a drain --all is in progress (balancers are told first)"));

  Request undrain;
  undrain.verb = Verb::kUndrain;
  undrain.all = true;
  manager_->undrain(8, undrain, T0 + 3s);
  lines = fx_.take();
  EXPECT_EQ(lines.front(), "error 5: called off by undrain");
  EXPECT_TRUE(starting_with(lines, "retire").empty()) << ::testing::PrintToString(lines);
  EXPECT_EQ(lines.back().rfind("ok 8 ", 0), 0u) << lines.back();
  EXPECT_FALSE(manager_->leaving());
  EXPECT_TRUE(manager_->not_ready_because().empty()) << "ready again";
}

TEST_F(SlotManagerTest, AGracefulStopWithAGraceKeepsServingUntilQuietThenRetiresAndItsDeadlineCountsFromThere) {
  start_serving(2, config_with_grace(2));
  manager_->stop(true, T0 + 1s);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"stopping gracefully"})) << "no worker is told anything yet";
  EXPECT_EQ(manager_->not_ready_because(), "lbd is stopping");
  EXPECT_EQ(fx_.states[0], SlotState::kActive);
  // A worker that crashes now is not restarted: lbd is stopping.
  manager_->on_exit(1, "was killed by signal 11 (SIGSEGV)", T0 + 1500ms);
  EXPECT_FALSE(manager_->slots()[0].restart_at);
  fx_.take();
  manager_->on_balancer_told(T0 + 2s);
  manager_->tick(T0 + 3s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "retire 2 stop 10000ms"));
  EXPECT_TRUE(contains(lines, "state 1 draining"));
  // The shutdown timeout runs from the end of the grace.
  manager_->tick(T0 + 12999ms);
  EXPECT_TRUE(fx_.take().empty());
  manager_->tick(T0 + 13s);
  EXPECT_TRUE(contains(fx_.take(), "kill 2"));
}

TEST_F(SlotManagerTest, AStopDuringADrainsGraceAnswersTheDrainAndASecondStopEndsItAtOnce) {
  start_serving(1, config_with_grace(1));
  manager_->drain(5, drain_all_request(true), T0 + 1s);
  fx_.take();
  manager_->stop(true, T0 + 2s);
  auto lines = fx_.take();
  EXPECT_TRUE(contains(lines, "error 5: lbd is stopping"));
  EXPECT_TRUE(starting_with(lines, "retire").empty()) << "the stop goes on with the same grace";
  EXPECT_EQ(manager_->next_deadline(), T0 + 11s) << "the grace began with the drain, not the stop";
  manager_->stop(false, T0 + 3s);
  EXPECT_TRUE(contains(fx_.take(), "kill 1"));
  EXPECT_FALSE(manager_->leaving());
}

TEST_F(SlotManagerTest, WithNothingServingThereIsNoGraceToGive) {
  start_serving(1, config_with_grace(1));
  manager_->drain(5, drain_request(0, false), T0 + 1s);  // one slot: no grace, the host stays in
  EXPECT_TRUE(contains(fx_.take(), "retire 1 drain 10000ms"));
  manager_->drain(6, drain_all_request(false), T0 + 2s);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{R"(ok 6 {"drained":[]})"}));
  EXPECT_FALSE(manager_->leaving());
}

// --- handing over -----------------------------------------------------------------------------

TEST_F(SlotManagerTest, SavedStateRestoresToTheSameStateAndCarriesOnCounting) {
  start_serving(2);
  manager_->on_exit(1, "was killed by signal 9 (SIGKILL)", T0 + 1s);  // slot 0 waits to restart
  manager_->drain(5, drain_request(1, false), T0 + 2s);              // slot 1 draining
  const nlohmann::json saved = manager_->save();

  FakeEffects successor_effects;
  auto restored = SlotManager::restore(saved, config_for(2), successor_effects);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(restored->save(), saved);
  restored->announce_restored_slots();
  EXPECT_EQ(successor_effects.states[0], SlotState::kEmpty);
  EXPECT_EQ(successor_effects.states[1], SlotState::kDraining);

  // The successor restarts slot 0 when its predecessor would have, with new ids.
  EXPECT_EQ(restored->next_deadline(), T0 + 1100ms);
  restored->tick(T0 + 1100ms);
  EXPECT_TRUE(contains(successor_effects.take(), "spawn 3 slot 0 cpu 0"));
  EXPECT_EQ(restored->total_restarts(0), 1u);
}

TEST_F(SlotManagerTest, ATakeoverStartsWhatWasStartingAgainAndFillsSlotsLeftEmpty) {
  start_serving(2);
  manager_->restart(7, 0, std::nullopt, T0 + 1s);  // slot 0: a replacement starting
  manager_->stop(true, T0 + 2s);                   // lbd dies while stopping: nothing serves
  const nlohmann::json saved = manager_->save();

  FakeEffects successor;
  auto restored = SlotManager::restore(saved, config_for(2), successor);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_FALSE(restored->stopping()) << "a new lbd serves";
  restored->resume_after_takeover(T0 + 3s);
  restored->tick(T0 + 3s);
  EXPECT_EQ(starting_with(successor.take(), "spawn"), (std::vector<std::string>{"spawn 4 slot 1 cpu 1"}));
  // Slot 0's replacement was killed by the stop; once it has gone, the slot starts one too.
  restored->on_exit(3, "was killed by signal 9 (SIGKILL)", T0 + 3100ms);
  restored->tick(T0 + 3100ms);
  EXPECT_EQ(starting_with(successor.take(), "spawn"), (std::vector<std::string>{"spawn 5 slot 0 cpu 0"}));
}

TEST_F(SlotManagerTest, AProcessKilledByTheShellNeverBecomesReady) {
  manager_.emplace(config_for(1), fx_);
  ASSERT_TRUE(manager_->start(T0));
  fx_.take();
  manager_->kill(1);
  EXPECT_EQ(fx_.take(), (std::vector<std::string>{"kill 1"}));
  manager_->on_ready(1, T0 + 1ms);  // its READY was already on its way
  EXPECT_TRUE(fx_.take().empty());
  EXPECT_FALSE(manager_->slots()[0].active());
}

TEST_F(SlotManagerTest, AStateItCannotReadIsRefusedWithOneLine) {
  start_serving(1);
  nlohmann::json saved = manager_->save();
  saved["version"] = 99;
  auto refused = SlotManager::restore(saved, config_for(1), fx_);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(), "the saved slot state has version 99; this lbd reads version 1");
  saved = manager_->save();
  saved["slots"][0]["serving"]["role"] = "dancing";
  refused = SlotManager::restore(saved, config_for(1), fx_);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("unknown process role 'dancing'"), std::string::npos)
      << refused.error().message();
  saved = manager_->save();
  saved["slots"][0]["serving"]["slot"] = 5;
  refused = SlotManager::restore(saved, config_for(1), fx_);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().message(), "the saved slot state puts a process of one slot in another");
}

}  // namespace
}  // namespace lbd
