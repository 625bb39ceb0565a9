// The state record, and taking the workers over from a predecessor: the lbd before this one,
// dead (kill -9, the OOM killer, a bug) or handing over to us (`lbctl upgrade`). See
// state_record.h for what is recorded, and docs/ARCHITECTURE.md, section 9, for the flow.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "common/log.h"
#include "steer_abi.h"
#include "supervisor/launch.h"
#include "supervisor/notify.h"
#include "supervisor/supervisor.h"

namespace lbd {

namespace {

using nlohmann::json;

json stats_to_json(const WorkerStatsSnapshot& stats) {
  return {{"duration_counts", stats.duration_counts}, {"duration_sum_ns", stats.duration_sum_ns},
          {"accepted", stats.accepted}};
}

WorkerStatsSnapshot stats_from_json(const json& j) {
  WorkerStatsSnapshot stats;
  const auto counts = j.at("duration_counts").get<std::vector<uint64_t>>();
  std::copy_n(counts.begin(), std::min(counts.size(), stats.duration_counts.size()), stats.duration_counts.begin());
  stats.duration_sum_ns = j.at("duration_sum_ns").get<uint64_t>();
  stats.accepted = j.at("accepted").get<uint64_t>();
  return stats;
}

// A client's bytes, whatever they are, through the record (JSON strings must be UTF-8).
std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex += kDigits[c >> 4];
    hex += kDigits[c & 15];
  }
  return hex;
}

std::string from_hex(std::string_view hex) {
  auto digit = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes += static_cast<char>(digit(hex[i]) << 4 | digit(hex[i + 1]));
  return bytes;
}

// The control clients a successor takes with the listener (ControlServer::waiting_clients).
json waiting_clients_to_json(const ControlServer& control) {
  json clients = json::array();
  for (const auto& waiting : control.waiting_clients()) {
    clients.push_back({{"fd", to_json(fd_ref(waiting.fd, -1))}, {"received", to_hex(waiting.received)}});
  }
  return clients;
}

// The admin connections a successor takes with the listener (AdminServer::held_clients).
json held_admin_clients_to_json(const AdminServer& admin) {
  json clients = json::array();
  for (const auto& held : admin.held_clients()) {
    clients.push_back({{"fd", to_json(fd_ref(held.fd, -1))},
                       {"received", to_hex(held.received)},
                       {"unsent", to_hex(held.unsent)},
                       {"answered", held.answered},
                       {"peer_closed", held.peer_closed}});
  }
  return clients;
}

std::string pids_of(const json& record) {
  std::string pids;
  for (const auto& child : record.value("children", json::array())) {
    pids += (pids.empty() ? "" : " ") + std::to_string(child.value("pid", 0));
  }
  return pids;
}

}  // namespace

// --- the record -------------------------------------------------------------------------------

json Supervisor::record() const {
  json children = json::array();
  for (const auto& [id, c] : children_) children.push_back(c->record());
  json history = json::array();
  for (uint32_t slot = 0; slot < history_.size(); slot++) {
    const SlotHistory& h = history_[slot];
    if (h.cpu_seconds == 0 && h.stats.requests() == 0 && h.stats.accepted == 0) continue;
    history.push_back({{"slot", slot}, {"stats", stats_to_json(h.stats)}, {"cpu_seconds", h.cpu_seconds}});
  }
  json bound = json::array();
  for (const auto& address : shared_.bound) bound.push_back(address.to_string());
  json shared_listeners = json::array();
  for (const auto& fd : shared_.shared_listeners) shared_listeners.push_back(to_json(fd_ref(fd.get(), -1)));
  return {{"version", kStateRecordVersion},
          {"boot_id", boot_id()},
          {"command_line", options_.command_line},
          {"pid", getpid()},
          {"start_time", process_start_time(getpid()).value_or(0)},
          {"binary", shared_.binary},
          {"started_at_ns", std::chrono::duration_cast<std::chrono::nanoseconds>(started_at_.time_since_epoch()).count()},
          {"mode", mode_name(options_.mode)},
          {"bound", std::move(bound)},
          {"groups", shared_.groups},
          {"pins", pin_dir_},
          {"policy", shared_.steering ? policy_name(shared_.steering->policy()) : "kernel"},
          {"control", to_json(fd_ref(control_ ? control_->listener_fd() : -1, -1))},
          // Only for a successor taking them from this lbd now: a client's descriptor dies with
          // this lbd, and the record outlives it.
          {"control_clients", upgrading_ && control_ ? waiting_clients_to_json(*control_) : json::array()},
          {"admin", to_json(fd_ref(admin_ ? admin_->listener_fd() : -1, -1))},
          {"admin_address", admin_ ? admin_->address().to_string() : ""},
          {"admin_clients", upgrading_ && admin_ ? held_admin_clients_to_json(*admin_) : json::array()},
          {"agent", to_json(fd_ref(agent_ ? agent_->listener_fd() : -1, -1))},
          {"agent_address", agent_ ? agent_->address().to_string() : ""},
          {"slot_table", to_json(fd_ref(shared_.plain_table ? shared_.plain_table->fd() : -1, -1))},
          {"notify_dir", shared_.notify_dir ? shared_.notify_dir->path() : ""},
          {"shared_listeners", std::move(shared_listeners)},
          {"slots", slots_->save()},
          {"history", std::move(history)},
          {"children", std::move(children)}};
}

// Rewritten when what it says has changed (something called an effect, or a process exited), by
// the writer's thread. A failed write is reported once and tried again a second later.
void Supervisor::save_record() {
  if (record_path_.empty() || !slots_) return;
  if (!record_writer_) record_writer_ = std::make_unique<StateRecordWriter>(record_path_);
  const auto now = Clock::now();
  if (auto error = record_writer_->take_error()) {
    if (!std::exchange(record_write_failed_, true)) {
      spdlog::warn("{}; a new lbd could not take these workers over if this one died", error->message());
    }
    record_dirty_ = true;
    last_record_.clear();
    next_record_retry_ = now + std::chrono::seconds(1);
  }
  if (!record_dirty_ || (record_write_failed_ && now < next_record_retry_)) return;
  // Arguments need not be UTF-8; JSON must be: such bytes are written as U+FFFD (the record
  // then matches no command line, and is not taken over, rather than lbd stopping here).
  std::string text = record().dump(-1, ' ', false, json::error_handler_t::replace);
  record_dirty_ = false;
  if (text == last_record_) return;
  last_record_version_ = record_writer_->submit(text);
  last_record_ = std::move(text);
}

// A clean stop: nothing is left to take over (while a process runs, a record stays for it).
void Supervisor::forget_record() {
  if (record_path_.empty() || (slots_ && !slots_->processes().empty())) return;
  if (record_writer_) {
    record_writer_->remove();
  } else {
    unlink(record_path_.c_str());
  }
  if (shared_.steering && !pin_dir_.empty()) shared_.steering->unpin(pin_dir_);
}

// The record of an lbd that died, if this lbd should take its workers over: same boot, same
// arguments, a version we read, its lbd gone, and some process of it still running. A record
// not to take over is said in one line and left alone; an lbd still running it is an error.
Result<std::optional<json>> Supervisor::record_to_take_over() {
  if (record_path_.empty()) return std::optional<json>();
  auto read = read_state_record(record_path_);
  if (!read) {
    spdlog::warn("{}; starting afresh", read.error().message());
    return std::optional<json>();
  }
  if (!*read) return std::optional<json>();
  const json& record = **read;
  auto ignore = [&](const std::string& why) -> Result<std::optional<json>> {
    spdlog::warn("not taking over from the lbd before this one ({}): {}", record_path_, why);
    return std::optional<json>();
  };
  try {
    if (!record.is_object() || record.value("version", 0) != kStateRecordVersion) {
      return ignore("its record has another version");
    }
    if (record.value("boot_id", "") != boot_id()) {
      spdlog::info("the state record {} is from an earlier boot; starting afresh", record_path_);
      return std::optional<json>();
    }
    if (record.value("command_line", json::array()) != json(options_.command_line)) {
      return ignore("it was started with other arguments; its processes (pids " + pids_of(record) +
                    ") are left as they are");
    }
    // Its lbd must be gone: the same pid with the same start time is that lbd, still running.
    const pid_t predecessor = record.value("pid", 0);
    if (process_runs(predecessor, record.value("start_time", uint64_t{0}))) {
      return Error::from_errno(EADDRINUSE, "another lbd is running (control socket " + options_.control_path +
                                               "), pid " + std::to_string(predecessor));
    }
    if (options_.mode == Mode::kBpf && record.value("pins", "").empty()) {
      return ignore("its steering maps were not pinned");
    }
    // Nothing of it runs any more (its workers died with it, or were stopped): a fresh start.
    const auto& children = record.value("children", json::array());
    const bool any_alive = std::any_of(children.begin(), children.end(), [](const json& child) {
      return process_runs(child.value("pid", 0), child.value("start_time", uint64_t{0}));
    });
    if (!any_alive) {
      spdlog::info("the lbd before this one (pid {}) left no process running; starting afresh", predecessor);
      return std::optional<json>();
    }
  } catch (const json::exception& e) {
    return ignore(std::string("its record is damaged: ") + e.what());
  }
  return std::optional<json>(record);
}

// --- taking over --------------------------------------------------------------------------------

// Takes everything the record names. From a live predecessor (`upgrading`) the descriptors come
// from it; from a dead one, from its processes. Nothing is done to any process here: take_charge()
// does what follows, once this lbd is in charge.
Result<void> Supervisor::take_over(const json& record, const FdTaker& taker, bool upgrading) {
  try {
    return take_over_recorded(record, taker, upgrading);
  } catch (const json::exception& e) {
    return Error::invalid(std::string("the state record is damaged: ") + e.what());
  }
}

Result<void> Supervisor::take_over_recorded(const json& record, const FdTaker& taker, bool upgrading) {
  takeover_started_ = Clock::now();
  spdlog::info("taking over from lbd pid {} ({}; {} processes in the record)", record.value("pid", 0),
               upgrading ? "it hands over" : "it is gone", record.value("children", json::array()).size());
  for (const auto& text : record.at("bound")) {
    auto address = parse_address(text.get<std::string>());
    if (!address) return address.error();
    shared_.bound.push_back(*address);
  }
  shared_.groups = record.at("groups").get<std::vector<uint32_t>>();
  started_at_ = Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::nanoseconds(record.at("started_at_ns").get<int64_t>())));

  // The control socket and the admin endpoint: a predecessor handing over passes its listeners
  // (no gap for lbctl and the monitoring); after a death they are opened again, the admin
  // endpoint where it was (--admin may have asked for port 0), else where --admin says.
  UniqueFd control, admin, agent;
  if (upgrading) {
    if (!options_.control_path.empty()) {
      auto fd = taker.take(fd_ref_from_json(record.value("control", json())), -1);
      if (!fd) return fd.error().wrap("take over the control socket");
      control = std::move(*fd);
    }
    if (options_.admin) {
      auto fd = taker.take(fd_ref_from_json(record.value("admin", json())), -1);
      if (!fd) return fd.error().wrap("take over the admin endpoint");
      admin = std::move(*fd);
    }
    if (options_.agent && !record.value("agent_address", "").empty()) {
      auto fd = taker.take(fd_ref_from_json(record.value("agent", json())), -1);
      if (!fd) return fd.error().wrap("take over the agent-check listener");
      agent = std::move(*fd);
    }
  }
  LBD_TRY(open_control(std::move(control)));
  if (upgrading && control_) {
    // The clients the predecessor accepted but had no request from: ours to answer now. One that
    // cannot be taken is closed with the predecessor, as it would have been.
    for (const auto& waiting : record.value("control_clients", json::array())) {
      auto fd = taker.take(fd_ref_from_json(waiting.value("fd", json())), -1);
      auto adopted = fd ? control_->adopt_client(std::move(*fd), from_hex(waiting.value("received", "")))
                        : Result<void>(fd.error());
      if (!adopted) spdlog::warn("control: a client of the lbd before could not be taken over: {}", adopted.error().message());
    }
  }
  if (!upgrading && options_.admin && !record.value("admin_address", "").empty()) {
    const auto configured = options_.admin;
    if (auto address = parse_address(record.value("admin_address", ""))) options_.admin = *address;
    if (!open_admin(UniqueFd())) options_.admin = configured;
  }
  if (!admin_) LBD_TRY(open_admin(std::move(admin)));
  if (upgrading && admin_) {
    // The connections the predecessor held (a probe, a scrape): ours to answer or finish now.
    for (const auto& entry : record.value("admin_clients", json::array())) {
      const AdminServer::Held held{.fd = -1,
                                   .received = from_hex(entry.value("received", "")),
                                   .unsent = from_hex(entry.value("unsent", "")),
                                   .answered = entry.value("answered", false),
                                   .peer_closed = entry.value("peer_closed", false)};
      auto fd = taker.take(fd_ref_from_json(entry.value("fd", json())), -1);
      auto adopted = fd ? admin_->adopt_client(std::move(*fd), held) : Result<void>(fd.error());
      if (!adopted) spdlog::warn("admin: a connection of the lbd before could not be taken over: {}", adopted.error().message());
    }
  }
  // The agent likewise: HAProxy knows it by its address, so after a death it comes back there.
  if (!upgrading && options_.agent && !record.value("agent_address", "").empty()) {
    const auto configured = options_.agent;
    if (auto address = parse_address(record.value("agent_address", ""))) options_.agent = *address;
    if (!open_agent(UniqueFd())) options_.agent = configured;
  }
  if (!agent_) LBD_TRY(open_agent(std::move(agent)));
  LBD_TRY(set_up_exec_mode());
  // The programs' NOTIFY_SOCKETs are in the predecessor's directory: it becomes this lbd's, and
  // goes when this lbd stops (otherwise every takeover would leave one behind in /run/lbd).
  if (const std::string dir = record.value("notify_dir", ""); is_program() && !dir.empty()) {
    const int group = options_.run_as ? static_cast<int>(options_.run_as->gid) : -1;
    auto adopted = NotifyDirectory::adopt(dir, notify_directory_prefix(options_.app), group);
    if (adopted) {
      shared_.notify_dir.emplace(std::move(*adopted));
    } else {
      spdlog::warn("{}: left where it is", adopted.error().message());
    }
  }

  if (options_.mode == Mode::kBpf) {
    pin_dir_ = record.value("pins", "");
    SteeringOptions steering = options_.steering;
    if (auto policy = parse_policy(record.value("policy", ""))) steering.policy = *policy;
    auto adopted = Steering::adopt(steering, pin_dir_, static_cast<uint32_t>(shared_.groups.size()));
    if (!adopted) return adopted.error().wrap("take over the steering maps");
    shared_.steering.emplace(std::move(*adopted));
  }

  auto restored = SlotManager::restore(record.at("slots"), manager_config(), static_cast<SlotEffects&>(*this));
  if (!restored) return restored.error();
  slots_.emplace(std::move(*restored));
  for (const auto& h : record.value("history", json::array())) {
    try {
      const auto slot = h.at("slot").get<uint32_t>();
      if (slot >= history_.size()) continue;
      history_[slot].stats = stats_from_json(h.at("stats"));
      history_[slot].cpu_seconds = h.at("cpu_seconds").get<double>();
    } catch (const json::exception&) {
      // A slot's history is worth keeping, not worth refusing the takeover for.
    }
  }

  // Each process, checked to be the one recorded and taken with its descriptors. One that cannot
  // be taken over is left alone until this lbd is in charge (take_charge()).
  std::map<ProcessId, const json*> recorded;  // points into `record`, not into a copy of it
  if (auto children = record.find("children"); children != record.end() && children->is_array()) {
    for (const auto& child : *children) {
      if (child.is_object()) recorded[child.value("id", 0u)] = &child;
    }
  }
  for (const ProcessRecord* p : slots_->processes()) {
    auto found = recorded.find(p->id);
    auto adopted = found == recorded.end() ? Result<std::unique_ptr<Child>>(Error::invalid("not in the record"))
                                           : adopt_child(*found->second, *p, taker, shared_);
    if (adopted) {
      if (auto watched = shared_.poller->watch((*adopted)->process().pidfd(), Source::kExit, p->id); watched) {
        children_[p->id] = std::move(*adopted);
        continue;
      } else {
        adopted = Result<std::unique_ptr<Child>>(watched.error());
      }
    }
    Lost lost{p->id, adopted.error().message()};
    if (found != recorded.end()) {
      lost.pid = p->pid;
      lost.start_time = found->second->value("start_time", uint64_t{0});
    }
    lost_.push_back(std::move(lost));
  }

  // The slot table: the steering program's (bpf), else a predecessor's memfd, which its workers
  // hold as fd 4 (worker_spec.h) when the predecessor is gone.
  if (!shared_.steering) {
    const FdRef table_ref = fd_ref_from_json(record.value("slot_table", json()));
    auto table_fd = taker.take(table_ref, -1);
    for (auto& [id, c] : children_) {
      if (table_fd) break;
      if (const json* r = recorded[id]; r && r->value("kind", "") == "worker") {
        table_fd = taker.take(FdRef{-1, 4, table_ref.device, table_ref.inode}, c->process().pidfd(), c->pid());
      }
    }
    auto table = table_fd ? SlotTable::map(table_fd->get()) : SlotTable::create_memfd();
    if (!table) return table.error();
    shared_.plain_table.emplace(std::move(*table));
  }
  if (options_.mode == Mode::kShared) {
    // Everyone's listeners: from the predecessor, or from any of its workers (fd 9 on).
    const json& listeners = record.value("shared_listeners", json::array());
    for (size_t g = 0; g < shared_.bound.size(); g++) {
      const FdRef shared_ref = g < listeners.size() ? fd_ref_from_json(listeners[g]) : FdRef{};
      auto fd = taker.take(shared_ref, -1);
      for (auto& [id, c] : children_) {
        if (fd) break;
        const json* r = recorded[id];
        const json& refs = r ? r->value("listeners", json::array()) : json::array();
        if (g < refs.size()) {
          fd = taker.take(FdRef{-1, fd_ref_from_json(refs[g]).child, shared_ref.device, shared_ref.inode},
                          c->process().pidfd(), c->pid());
        }
      }
      if (!fd) return fd.error().wrap("take over the shared listener of " + shared_.bound[g].to_string());
      shared_.shared_listeners.push_back(std::move(*fd));
    }
  }
  slots_->announce_restored_slots();
  takeover_from_ = record.value("pid", 0);
  return {};
}

// This lbd is in charge now: the steering program is this build's, what was starting is started
// again, and what could not be taken over is replaced.
void Supervisor::take_charge() {
  const auto now = Clock::now();
  if (shared_.steering) {
    // One listener of each group carries the program to all of it (attaching replaces the
    // predecessor's program for the whole group).
    for (uint32_t g = 0; g < shared_.groups.size(); g++) {
      for (const auto& [id, c] : children_) {
        if (auto attached = c->attach_steering(g); attached) break;
      }
    }
    shared_.steering->set_slot_count(static_cast<uint32_t>(slots_->slots().size()));
    if (auto pinned = shared_.steering->pin(pin_dir_); !pinned) spdlog::warn("{}", pinned.error().message());
  }
  size_t adopted = children_.size();
  for (const Lost& lost : lost_) {
    spdlog::warn("process {} of the lbd before could not be taken over: {}", lost.id, lost.why);
    // Still running but not ours to run (its descriptors could not be taken): it finishes what it
    // holds and goes, and its slot starts a new one.
    if (process_runs(lost.pid, lost.start_time)) ::kill(lost.pid, SIGTERM);
    slots_->on_exit(lost.id, "was gone when lbd took over", now);
  }
  lost_.clear();
  // A process that was starting was waiting for a probe or a message the predecessor kept:
  // start it again rather than guess (the slot manager kills it, so it never becomes ready).
  std::vector<ProcessId> starting;
  for (const ProcessRecord* p : slots_->processes()) {
    if (p->role == ProcessRole::kStarting) starting.push_back(p->id);
  }
  for (ProcessId id : starting) {
    if (const ProcessRecord* p = slots_->find(id)) {
      spdlog::info("worker {}: pid {} was starting when lbd took over; starting it again", p->slot, p->pid);
    }
    slots_->kill(id);
  }
  // A slot left with nothing to serve it (lbd died while stopping, say) starts a worker.
  slots_->resume_after_takeover(now);
  // The record names this lbd from now on (before anything else happens to it).
  record_dirty_ = true;
  last_record_.clear();
  save_record();
  spdlog::info("took over {} processes from lbd pid {} ({} slots, serving {}, mode {}, policy {}) in {} ms", adopted,
               takeover_from_, slots_->slots().size(), listen_summary(), mode_name(options_.mode),
               shared_.steering ? policy_name(shared_.steering->policy()) : "kernel",
               std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - takeover_started_).count());
  // The service manager follows this pid (an upgrade told it before; after a death it learns it
  // here), and hears READY=1 with the "ready" line once every slot serves.
  notify_service_manager(("MAINPID=" + std::to_string(getpid())).c_str());
  slots_->announce_ready_again();
}

// --- upgrading: this lbd hands over to the binary on disk ----------------------------------------
//
// Tableflip's rules: the successor is started with the same arguments, takes everything over
// while this lbd waits (and does nothing else), and says READY; only then does this one exit. If
// it exits first, or is not ready in time, it is killed, this lbd goes on as before, and the
// upgrade fails with one line. Workers keep their pids and their connections throughout.

namespace {

constexpr char kUpgradeEnv[] = "LBD_UPGRADE_FD";
constexpr char kReady[] = "READY";
constexpr std::chrono::seconds kPredecessorExitTimeout{10};

}  // namespace

std::optional<UniqueFd> Supervisor::upgrade_channel_from_environment() {
  const char* value = getenv(kUpgradeEnv);
  if (!value) return std::nullopt;
  UniqueFd channel(atoi(value));
  unsetenv(kUpgradeEnv);  // not for our children
  fcntl(channel.get(), F_SETFD, FD_CLOEXEC);
  return channel;
}

// Why this lbd cannot hand over now, or empty.
std::string Supervisor::why_no_upgrade() const {
  if (record_path_.empty()) {
    if (options_.mode == Mode::kHandoff) return "--mode handoff keeps the supervisor in the data path";
    return no_record_why_.empty() ? "this lbd keeps no state record" : no_record_why_;
  }
  if (slots_->stopping()) return "lbd is stopping";
  if (auto op = slots_->operation()) return std::string("busy: a ") + control::verb_name(*op) + " is in progress";
  // The grace is no part of the record: a successor would be ready again at once.
  if (slots_->leaving()) return "busy: a drain --all is in progress (balancers are told first)";
  for (const ProcessRecord* p : slots_->processes()) {
    if (p->role == ProcessRole::kStarting) {
      return "busy: worker " + std::to_string(p->slot) + " (pid " + std::to_string(p->pid) + ") is starting";
    }
  }
  return {};
}

void Supervisor::upgrade(std::optional<ClientId> client, std::chrono::milliseconds timeout) {
  auto fail = [&](const std::string& why) {
    spdlog::error("upgrade failed: {}", why);
    if (client && control_) control_->finish_error(*client, "upgrade failed: " + why);
  };
  if (auto why = why_no_upgrade(); !why.empty()) return fail(why);
  // The record the successor reads, as of now, on disk before it starts. From here on this lbd
  // reads no client until it exits or resumes: what the record says of its clients stays true.
  record_dirty_ = true;
  last_record_.clear();
  upgrading_ = true;
  save_record();
  upgrading_ = false;
  if (!record_writer_ || !record_writer_->wait_written(last_record_version_, timeout)) {
    return fail("cannot write the state record " + record_path_);
  }

  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return fail(strerror(errno));
  UniqueFd ours(pair[0]), theirs(pair[1]);
  // The file at lbd's path now, a new build (the path resolved at start: /proc/self/exe names
  // the deleted file once a deploy has replaced it).
  const std::string& binary = shared_.binary;
  // The successor runs as root with everything this lbd holds: only a build root owns.
  auto binary_fd = open_lbd_binary(binary);
  if (!binary_fd) return fail(binary_fd.error().message());
  if (auto trusted = check_trusted_binary(binary_fd->get(), binary); !trusted) return fail(trusted.error().message());
  ProcessLaunch launch;
  launch.path = binary;
  launch.exec_fd = binary_fd->get();
  launch.argv = {"lbd"};
  for (const auto& arg : options_.command_line) launch.argv.push_back(arg);
  launch.env = inherited_environment({kUpgradeEnv});
  launch.env.push_back(std::string(kUpgradeEnv) + "=3");
  launch.fds = {{0, 0}, {1, 1}, {2, 2}, {theirs.get(), 3}};
  auto pid = spawn_process(launch);
  if (!pid) return fail(pid.error().message());
  theirs.reset();
  auto owned = ChildProcess::own(*pid);
  if (!owned) return fail(owned.error().message());
  ChildProcess successor = std::move(*owned);
  spdlog::info("upgrade: started pid {} ({}); waiting for it to take over", *pid, binary);

  // Wait, doing nothing else: the successor is taking over what this lbd holds.
  const auto deadline = Clock::now() + timeout;
  std::string failure;
  while (true) {
    pollfd events[2] = {{ours.get(), POLLIN, 0}, {successor.pidfd(), POLLIN, 0}};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    // At the deadline, one last look without waiting: a READY that came just then counts.
    const int ready = poll(events, 2, static_cast<int>(std::max<int64_t>(left, 0)));
    if (ready < 0 && errno != EINTR) {
      failure = std::string("poll: ") + strerror(errno);
      break;
    }
    if (ready == 0 && left <= 0) {
      failure = "the new lbd (pid " + std::to_string(*pid) + ") did not take over within " +
                fmt::format("{:.0f}", std::chrono::duration<double>(timeout).count()) + " s";
      break;
    }
    char message[16] = {};
    if (events[0].revents & POLLIN) {
      const ssize_t n = recv(ours.get(), message, sizeof(message) - 1, MSG_DONTWAIT);
      if (n > 0 && std::string_view(message, static_cast<size_t>(n)) == kReady) {
        spdlog::info("upgrade: pid {} took over; this lbd (pid {}) exits", *pid, getpid());
        if (client && control_) {
          control_->finish_ok(*client, {{"verb", "upgrade"}, {"old_pid", getpid()}, {"new_pid", *pid}});
        }
        leave_shared_files();
        handed_over_ = true;
        // A stop that came while we waited is the new lbd's to carry out now.
        signalfd_siginfo info{};
        while (read(signal_fd_.get(), &info, sizeof(info)) == sizeof(info)) {
          if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT || info.ssi_signo == SIGQUIT) {
            spdlog::info("passing SIG{} on to pid {}", sigabbrev_np(static_cast<int>(info.ssi_signo)), *pid);
            successor.signal(static_cast<int>(info.ssi_signo));
          }
        }
        return;
      }
    }
    if ((events[0].revents & (POLLHUP | POLLERR)) || (events[1].revents & POLLIN)) {
      pollfd exited{successor.pidfd(), POLLIN, 0};
      poll(&exited, 1, 1000);  // it closed the channel: its exit follows at once
      auto exit = successor.reap();
      failure = "the new lbd (pid " + std::to_string(*pid) + ") " + (exit ? exit->description : "closed its channel") +
                " before it took over";
      break;
    }
  }
  successor.kill_and_reap(false);
  fail(failure + "; this lbd (pid " + std::to_string(getpid()) + ") keeps serving");
}

void Supervisor::leave_shared_files() {
  if (control_) control_->hand_over();
  if (shared_.notify_dir) shared_.notify_dir->hand_over();
}

// The successor's side: take over from the lbd that started us, tell it, and wait for it to go.
Result<void> Supervisor::take_over_from_predecessor(UniqueFd channel) {
  took_over_ = true;
  const pid_t parent = getppid();
  UniqueFd predecessor(static_cast<int>(syscall(SYS_pidfd_open, parent, 0)));
  if (!predecessor) return Error::from_errno("pidfd_open for the lbd upgrading (pid " + std::to_string(parent) + ")");
  auto read = read_state_record(record_path_);
  if (!read) return read.error();
  if (!*read) return Error::from_errno(ENOENT, "no state record at " + record_path_);
  const json& record = **read;
  if (!record.is_object() || record.value("version", 0) != kStateRecordVersion) {
    return Error::invalid("the state record of pid " + std::to_string(parent) + " has version " +
                          (record.is_object() ? record.value("version", json(nullptr)).dump() : "?") +
                          "; this lbd reads version " + std::to_string(kStateRecordVersion));
  }
  // The lbd that started us is the one the record names (its pid and start time), and it is
  // still there: its descriptors are what we take.
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (record.value("pid", 0) != parent || process_start_time(parent) != record.value("start_time", uint64_t{0}) ||
      getsockopt(channel.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || peer.pid != parent) {
    return Error::invalid("the lbd that started this one (pid " + std::to_string(parent) +
                          ") is not the one the state record " + record_path_ + " names");
  }
  LBD_TRY(take_over(record, FdTaker(predecessor.get()), /*upgrading=*/true));
  // The service manager follows the new main pid before the old one exits (NotifyAccess=all).
  notify_service_manager(("MAINPID=" + std::to_string(getpid())).c_str());
  if (send(channel.get(), kReady, strlen(kReady), MSG_NOSIGNAL) < 0) {
    return Error::from_errno("tell the lbd upgrading (pid " + std::to_string(parent) + ") that we are ready");
  }
  // It exits now; until it has, it may still be answering its last client.
  pollfd gone{predecessor.get(), POLLIN, 0};
  if (poll(&gone, 1, static_cast<int>(std::chrono::milliseconds(kPredecessorExitTimeout).count())) == 0) {
    spdlog::warn("the lbd before (pid {}) has not exited {} s after the handover", parent, kPredecessorExitTimeout.count());
  }
  take_charge();
  return {};
}

}  // namespace lbd
