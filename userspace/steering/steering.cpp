#include "steering/steering.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netinet/in.h>
#include <linux/magic.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstring>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/shared_field.h"
#include "steer_bpf.skel.h"

namespace lbd {

namespace {

// libbpf's own messages (verifier logs among them) go to our log at debug level; warnings stay
// warnings.
int forward_libbpf_log(enum libbpf_print_level level, const char* format, va_list args) {
  char line[1024];
  int n = vsnprintf(line, sizeof(line), format, args);
  if (n > 0 && line[std::min<size_t>(n, sizeof(line) - 1) - 1] == '\n') {
    line[std::min<size_t>(n, sizeof(line) - 1) - 1] = '\0';
  }
  if (level == LIBBPF_WARN) {
    spdlog::warn("libbpf: {}", line);
  } else {
    spdlog::debug("libbpf: {}", line);
  }
  return n;
}

Error load_error(int err) {
  if (err == EPERM || err == EACCES) {
    return Error::from_errno(err,
                             "cannot load the BPF steering program (lbd needs root, or CAP_BPF, CAP_PERFMON and "
                             "CAP_NET_ADMIN, for --mode bpf; --mode reuseport runs without them)");
  }
  return Error::from_errno(err, "cannot load the BPF steering program");
}

// A reuseport group's or a probe's key: what the program reads from the packet or struct bpf_sock,
// the port in host order and the address in network order (IPv4 in addr[0]; zero for a wildcard).
template <class Key>
Key address_key(const net::Address& address) {
  Key key{};
  key.family = address.family();
  key.port = address.port();
  if (address.is_v6()) {
    std::memcpy(key.addr, &reinterpret_cast<const sockaddr_in6*>(address.sockaddr_ptr())->sin6_addr, 16);
  } else {
    key.addr[0] = reinterpret_cast<const sockaddr_in*>(address.sockaddr_ptr())->sin_addr.s_addr;
  }
  return key;
}

// The program finds a listener's group in its copy of the `groups` map, config.group_keys in .bss (see
// steer.bpf.c): the key goes into row `row` first, and the row counts only once nr_groups covers
// it (a release store: on any CPU the program that sees the count sees the key).
void publish_group(steer_bpf& skeleton, const lbd_group_key& key, uint32_t row) {
  std::memcpy(const_cast<lbd_group_key*>(&skeleton.bss->config.group_keys[row]), &key, sizeof(key));
  auto& count = const_cast<uint32_t&>(skeleton.bss->config.nr_groups);
  if (row + 1 > load_field(count)) std::atomic_ref<uint32_t>(count).store(row + 1, std::memory_order_release);
}

}  // namespace

const char* policy_name(Policy policy) {
  switch (policy) {
    case Policy::kRoundRobin: return "rr";
    case Policy::kLeast: return "least";
    case Policy::kHash: return "hash";
    case Policy::kSticky: return "sticky";
  }
  return "unknown";
}

namespace {

// Read-only data of the program, fixed before it loads.
void set_stall_bounds(steer_bpf& skeleton, const SteeringOptions& options) {
  using std::chrono::nanoseconds;
  skeleton.rodata->stale_after_ns = std::chrono::duration_cast<nanoseconds>(options.stale_after).count();
  skeleton.rodata->sticky_stale_after_ns = std::chrono::duration_cast<nanoseconds>(options.sticky_stale_after).count();
}

}  // namespace

Result<Steering> Steering::load(const SteeringOptions& options) {
  libbpf_set_print(forward_libbpf_log);
  std::unique_ptr<steer_bpf, void (*)(steer_bpf*)> skeleton(steer_bpf__open(), steer_bpf__destroy);
  if (!skeleton) return load_error(errno);
  set_stall_bounds(*skeleton, options);
  if (int err = steer_bpf__load(skeleton.get()); err != 0) return load_error(-err);

  auto table = SlotTable::map(bpf_map__fd(skeleton->maps.slot_table));
  if (!table) return table.error().wrap("steering");
  Steering steering(std::move(skeleton), std::move(*table));
  steering.set_policy(options.policy);
  return steering;
}

namespace {

// The maps a successor takes over, by the name of their pin.
std::vector<std::pair<std::string, bpf_map*>> pinned_maps(steer_bpf* skeleton) {
  return {{"sockarray", skeleton->maps.sockarray},
          {"slot_table", skeleton->maps.slot_table},
          {"stats", skeleton->maps.stats},
          {"groups", skeleton->maps.groups},
          {"probes", skeleton->maps.probes}};
}

// A pinned map is the one this build's program expects: same type, key, value and size.
Result<void> check_same_map(int fd, const bpf_map* expected, const std::string& name) {
  bpf_map_info info{};
  uint32_t length = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &length) != 0) return Error::from_errno("inspect pinned map " + name);
  if (info.type != static_cast<uint32_t>(bpf_map__type(expected)) || info.key_size != bpf_map__key_size(expected) ||
      info.value_size != bpf_map__value_size(expected) || info.max_entries != bpf_map__max_entries(expected)) {
    return Error::from_errno(EPROTO, "pinned map " + name + " has another layout (another lbd build?)");
  }
  return {};
}

}  // namespace

Result<Steering> Steering::adopt(const SteeringOptions& options, const std::string& dir, uint32_t groups) {
  libbpf_set_print(forward_libbpf_log);
  std::unique_ptr<steer_bpf, void (*)(steer_bpf*)> skeleton(steer_bpf__open(), steer_bpf__destroy);
  if (!skeleton) return load_error(errno);
  set_stall_bounds(*skeleton, options);
  for (auto& [name, map] : pinned_maps(skeleton.get())) {
    const std::string path = dir + "/" + name;
    UniqueFd fd(bpf_obj_get(path.c_str()));
    if (!fd) return Error::from_errno("open pinned map " + path);
    LBD_TRY(check_same_map(fd.get(), map, name));
    if (int err = bpf_map__reuse_fd(map, fd.get()); err != 0) return Error::from_errno(-err, "reuse map " + path);
  }
  if (int err = steer_bpf__load(skeleton.get()); err != 0) return load_error(-err);

  auto table = SlotTable::map(bpf_map__fd(skeleton->maps.slot_table));
  if (!table) return table.error().wrap("steering");
  Steering steering(std::move(skeleton), std::move(*table));
  steering.groups_ = groups;
  steering.set_policy(options.policy);
  // The program's copy of the groups, from the map the predecessor filled (whatever its build).
  bpf_map* group_map = steering.skeleton_->maps.groups;
  lbd_group_key group_key{}, next_key{};
  const void* previous = nullptr;
  while (bpf_map__get_next_key(group_map, previous, &next_key, sizeof(next_key)) == 0) {
    group_key = next_key;
    previous = &group_key;
    uint32_t row = 0;
    if (bpf_map__lookup_elem(group_map, &group_key, sizeof(group_key), &row, sizeof(row), 0) == 0 &&
        row < LBD_MAX_GROUPS) {
      publish_group(*steering.skeleton_, group_key, row);
    }
  }
  // Probes were the predecessor's, for processes that were starting: none is any more.
  lbd_probe_key key{};
  while (bpf_map__get_next_key(steering.skeleton_->maps.probes, nullptr, &key, sizeof(key)) == 0) {
    if (bpf_map__delete_elem(steering.skeleton_->maps.probes, &key, sizeof(key), 0) != 0) break;
  }
  for (uint32_t group = 0; group < LBD_MAX_GROUPS; group++) {
    for (uint32_t slot = 0; slot < LBD_MAX_SLOTS; slot++) {
      const uint32_t place = LBD_PROBE_INDEX(group, slot);
      bpf_map__delete_elem(steering.skeleton_->maps.sockarray, &place, sizeof(place), 0);
    }
  }
  return steering;
}

namespace {

// Pins live on the BPF filesystem, which systemd mounts at /sys/fs/bpf at boot; a machine booted
// without it (a container, an init that is not systemd) has a plain sysfs folder there, where
// nothing can be pinned. Mount it then, as bpftool does: root may, and only the mount point's
// owner reads it (mode 0700).
Result<void> ensure_bpf_filesystem(const std::string& dir) {
  const std::string mount_point = dir.substr(0, dir.rfind('/'));
  struct statfs fs {};
  if (statfs(mount_point.c_str(), &fs) != 0) return Error::from_errno("statfs " + mount_point);
  if (static_cast<unsigned long>(fs.f_type) == BPF_FS_MAGIC) return {};
  // Two lbds starting at once must not mount twice (the second mount would hide the first one's
  // pins): the check and the mount happen under a lock on the bare mount point, and the check is
  // made again once the lock is ours.
  UniqueFd bare(open(mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!bare) return Error::from_errno("open " + mount_point);
  if (flock(bare.get(), LOCK_EX) != 0) return Error::from_errno("lock " + mount_point);
  if (statfs(mount_point.c_str(), &fs) != 0) return Error::from_errno("statfs " + mount_point);
  if (static_cast<unsigned long>(fs.f_type) == BPF_FS_MAGIC) return {};
  if (mount("bpf", mount_point.c_str(), "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
    return Error::from_errno(mount_point + " is not a BPF filesystem, and mounting one there failed (mount -t bpf bpf " +
                             mount_point + ")");
  }
  spdlog::info("mounted a BPF filesystem on {}: nothing had (systemd does at boot)", mount_point);
  return {};
}

}  // namespace

Result<void> Steering::pin(const std::string& dir) {
  LBD_TRY(ensure_bpf_filesystem(dir));
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Error::from_errno("create " + dir);
  for (auto& [name, map] : pinned_maps(skeleton_.get())) {
    const std::string path = dir + "/" + name;
    unlink(path.c_str());  // left by a run that crashed and was not adopted
    if (int err = bpf_map__pin(map, path.c_str()); err != 0) return Error::from_errno(-err, "pin map " + path);
  }
  return {};
}

void Steering::unpin(const std::string& dir) {
  for (auto& [name, map] : pinned_maps(skeleton_.get())) {
    const std::string path = dir + "/" + name;
    unlink(path.c_str());
  }
  rmdir(dir.c_str());
}

Steering::Steering(std::unique_ptr<steer_bpf, void (*)(steer_bpf*)> skeleton, SlotTable table)
    : skeleton_(std::move(skeleton)), table_(std::move(table)) {}
Steering::Steering(Steering&&) noexcept = default;
Steering& Steering::operator=(Steering&&) noexcept = default;
Steering::~Steering() = default;

Result<uint32_t> Steering::add_group(const net::Address& bound) {
  if (groups_ >= LBD_MAX_GROUPS) {
    return Error::from_errno(E2BIG, "too many listen addresses (at most " +
                                        std::to_string(LBD_MAX_GROUPS) + ")");
  }
  const auto key = address_key<lbd_group_key>(bound);
  uint32_t group = groups_;
  if (bpf_map__update_elem(skeleton_->maps.groups, &key, sizeof(key), &group, sizeof(group),
                           BPF_NOEXIST) != 0) {
    return Error::from_errno("register reuseport group " + bound.to_string());
  }
  publish_group(*skeleton_, key, group);
  groups_++;
  return group;
}

Result<void> Steering::attach(int listener_fd) {
  int prog_fd = bpf_program__fd(skeleton_->progs.lbd_steer);
  if (setsockopt(listener_fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd, sizeof(prog_fd)) != 0) {
    return Error::from_errno("attach steering program (SO_ATTACH_REUSEPORT_EBPF)");
  }
  return {};
}

Result<void> Steering::set_socket(uint32_t group, uint32_t slot, int listener_fd) {
  uint32_t index = LBD_SOCKARRAY_INDEX(group, slot);
  uint64_t fd = static_cast<uint64_t>(listener_fd);
  if (bpf_map__update_elem(skeleton_->maps.sockarray, &index, sizeof(index), &fd, sizeof(fd),
                           BPF_ANY) != 0) {
    return Error::from_errno("put listener into slot " + std::to_string(slot));
  }
  return {};
}

Result<void> Steering::clear_socket(uint32_t group, uint32_t slot) {
  uint32_t index = LBD_SOCKARRAY_INDEX(group, slot);
  if (bpf_map__delete_elem(skeleton_->maps.sockarray, &index, sizeof(index), 0) != 0 &&
      errno != ENOENT) {
    return Error::from_errno("clear slot " + std::to_string(slot));
  }
  return {};
}

Result<Steering::ProbeRegistration> Steering::add_probe(uint32_t group, uint32_t slot, int listener_fd,
                                                       const net::Address& source) {
  uint32_t place = LBD_PROBE_INDEX(group, slot);
  uint64_t fd = static_cast<uint64_t>(listener_fd);
  if (bpf_map__update_elem(skeleton_->maps.sockarray, &place, sizeof(place), &fd, sizeof(fd), BPF_ANY) != 0) {
    return Error::from_errno("put a starting worker's listener into its probe place");
  }
  const auto key = address_key<lbd_probe_key>(source);
  const lbd_probe probe{.place = place, .delivered = 0};
  // BPF_NOEXIST: the source is ours alone (our socket holds its port), so an entry there is a
  // bug, and replacing it would leave probes_pending one too high.
  if (bpf_map__update_elem(skeleton_->maps.probes, &key, sizeof(key), &probe, sizeof(probe), BPF_NOEXIST) != 0) {
    auto error = Error::from_errno("register a readiness probe");
    bpf_map__delete_elem(skeleton_->maps.sockarray, &place, sizeof(place), 0);
    return error;
  }
  auto& pending = const_cast<uint32_t&>(skeleton_->bss->config.probes_pending);
  store_field(pending, load_field(pending) + 1);
  return ProbeRegistration(this, place, source);
}

void Steering::remove_probe(uint32_t place, const net::Address& source) {
  const auto key = address_key<lbd_probe_key>(source);
  if (bpf_map__delete_elem(skeleton_->maps.probes, &key, sizeof(key), 0) == 0) {
    auto& pending = const_cast<uint32_t&>(skeleton_->bss->config.probes_pending);
    const uint32_t now = load_field(pending);
    store_field(pending, now > 0 ? now - 1 : 0);
  }
  bpf_map__delete_elem(skeleton_->maps.sockarray, &place, sizeof(place), 0);
}

Steering::ProbeRegistration::ProbeRegistration(ProbeRegistration&& other) noexcept
    : steering_(std::exchange(other.steering_, nullptr)), place_(other.place_), source_(other.source_) {}

bool Steering::ProbeRegistration::delivered() const {
  if (!steering_) return false;
  const auto key = address_key<lbd_probe_key>(source_);
  lbd_probe probe{};
  return bpf_map__lookup_elem(steering_->skeleton_->maps.probes, &key, sizeof(key), &probe, sizeof(probe), 0) == 0 &&
         probe.delivered != 0;
}

Steering::ProbeRegistration::~ProbeRegistration() {
  if (steering_) steering_->remove_probe(place_, source_);
}

int Steering::program_fd() const { return bpf_program__fd(skeleton_->progs.lbd_steer); }

void Steering::set_policy(Policy policy) {
  store_field(const_cast<uint32_t&>(skeleton_->bss->config.policy), static_cast<uint32_t>(policy));
}

Policy Steering::policy() const {
  return static_cast<Policy>(load_field(const_cast<const uint32_t&>(skeleton_->bss->config.policy)));
}

void Steering::set_slot_count(uint32_t count) {
  store_field(const_cast<uint32_t&>(skeleton_->bss->config.nr_slots), count);
}

uint64_t Steering::sum_stats(uint32_t index, SlotCounters* out) const {
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return 0;
  std::vector<lbd_slot_stats> per_cpu(cpus);
  if (bpf_map__lookup_elem(skeleton_->maps.stats, &index, sizeof(index), per_cpu.data(),
                           per_cpu.size() * sizeof(lbd_slot_stats), 0) != 0) {
    return 0;
  }
  uint64_t fallback = 0;
  for (const auto& s : per_cpu) {
    if (out) {
      out->selected += s.selected;
      out->migrated += s.migrated;
      out->select_failed += s.select_failed;
    }
    fallback += s.fallback;
  }
  return fallback;
}

SlotCounters Steering::counters(uint32_t slot) const {
  SlotCounters counters;
  sum_stats(slot, &counters);
  return counters;
}

uint64_t Steering::fallbacks() const { return sum_stats(LBD_NO_SLOT, nullptr); }

}  // namespace lbd
