#include "sandbox/confine.h"

#include <grp.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>

#include "common/unique_fd.h"

namespace lbd {

namespace {

struct FilterContext {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

}  // namespace

Result<SeccompProgram> SeccompProgram::steering_guard() {
  std::unique_ptr<void, FilterContext> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return Error::from_errno(ENOMEM, "seccomp_init");
  // A call from another ABI (i386's int 0x80, x32) is not checked by these rules, so it is not
  // allowed either: the default for a foreign architecture is to kill the process.
  if (int err = seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); err < 0) {
    return Error::from_errno(-err, "seccomp: foreign architectures");
  }
  // The level and option are ints: the kernel reads the low 32 bits of each register and ignores
  // the rest, so the rule must too, or junk in the upper half would slip a call past it.
  // (libseccomp's SCMP_A1_32 only narrows the datum; the comparison stays 64-bit. A mask does it.)
  constexpr scmp_datum_t kLow32 = 0xffffffffu;
  for (int option : {SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF, SO_DETACH_REUSEPORT_BPF}) {
    const int err = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(setsockopt), 2,
                                     SCMP_A1(SCMP_CMP_MASKED_EQ, kLow32, SOL_SOCKET),
                                     SCMP_A2(SCMP_CMP_MASKED_EQ, kLow32, static_cast<scmp_datum_t>(option)));
    if (err < 0) return Error::from_errno(-err, "seccomp: setsockopt rule");
  }
  if (int err = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_setup), 0); err < 0) {
    return Error::from_errno(-err, "seccomp: io_uring_setup rule");
  }

  // libseccomp 2.5 exports to a descriptor only; read the instructions back from memory.
  UniqueFd memory(memfd_create("lbd-seccomp", MFD_CLOEXEC));
  if (!memory) return Error::from_errno("memfd_create");
  if (int err = seccomp_export_bpf(ctx.get(), memory.get()); err < 0) return Error::from_errno(-err, "seccomp export");
  const off_t size = lseek(memory.get(), 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0) {
    return Error::from_errno(EINVAL, "seccomp export: unexpected size");
  }
  SeccompProgram program;
  program.instructions_.resize(static_cast<size_t>(size) / sizeof(sock_filter));
  if (pread(memory.get(), program.instructions_.data(), static_cast<size_t>(size), 0) != size) {
    return Error::from_errno("seccomp export: read back");
  }
  return program;
}

ConfineFailure confine(const RunAs* as, bool keep_caps, const SeccompProgram* filter) {
  auto failed = [](const char* step) { return ConfineFailure{step, errno}; };
  // Raw system calls: glibc's setuid family signals every thread of the process, which is
  // neither needed nor safe in a forked child of a threaded supervisor.
  if (as) {
    if (syscall(SYS_setgroups, as->groups.size(), as->groups.data()) != 0) return failed("setgroups");
    if (syscall(SYS_setresgid, as->gid, as->gid, as->gid) != 0) return failed("setresgid");
  }
  if (!keep_caps) {
    // The bounding set limits what any later exec can gain (a root-owned setuid file, or root
    // itself executing a file). Dropping needs CAP_SETPCAP: without it (lbd not run as root)
    // there is nothing in it worth dropping.
    for (int cap = 0; cap <= 63; cap++) {
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
        if (errno == EINVAL) break;  // past the kernel's last capability
        if (errno == EPERM) break;
        return failed("drop the capability bounding set");
      }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
      return failed("clear ambient capabilities");
    }
  }
  if (as && syscall(SYS_setresuid, as->uid, as->uid, as->uid) != 0) return failed("setresuid");
  if (!keep_caps) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3] = {};
    if (syscall(SYS_capset, &header, none) != 0) return failed("capset");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return failed("PR_SET_NO_NEW_PRIVS");
  }
  if (filter) {
    // Without NO_NEW_PRIVS the kernel takes a filter only from a process with CAP_SYS_ADMIN,
    // which a kept-capabilities root has.
    sock_fprog program{static_cast<unsigned short>(filter->instructions().size()),
                       const_cast<sock_filter*>(filter->instructions().data())};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0) return failed("seccomp");
  }
  return {};
}

}  // namespace lbd
