// What an exec-mode worker holds, measured from the kernel.
//
// A worker in exec mode is a program lbd did not write, and often a process tree: gunicorn's
// master forks workers that inherit fd 3 and accept on it, so the connections live in the
// grandchildren. The supervisor cannot ask such a program for its load, so it reads it here:
//   - the processes of each worker's tree (a scan of /proc/*/stat for parent pids),
//   - the tree's resident memory (--max-memory, `lbctl status`),
//   - the TCP connections the tree holds open on the service's ports (one sock_diag dump, then
//     the tree's /proc/PID/fd links), which with the listener's accept queue (TCP_INFO) is the
//     worker's load.
// Every reading is a snapshot: processes and connections come and go while it is taken.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "common/result.h"

namespace lbd {

// The processes of the tree rooted at each of `roots`, from one scan of /proc: the root first,
// then its descendants breadth-first. A root that no longer exists gets an empty tree; a process
// that exits or is born during the scan may or may not be listed. A root inside another root's
// tree appears in both. Orphans re-parented away (to init or a subreaper) leave the tree.
//
// The scan reads every /proc/PID/stat on the machine, so its cost grows with the machine, not the
// trees: call it once for all workers, not once per worker. Measured on this 2-core VM (kernel
// 6.18, ~90 processes, a bare syscall costs 1.1 µs here): 0.55-0.9 ms per call, 16 roots as 2.
// (Walking /proc/PID/task/TID/children from the roots instead took ~70 µs for 2 small trees and
// does not grow with the machine, but needs CONFIG_PROC_CHILDREN and one read per thread.)
Result<std::vector<std::vector<pid_t>>> process_trees(const std::vector<pid_t>& roots);
Result<std::vector<pid_t>> process_tree(pid_t root);

// Whether `pid` is `root` or one of its descendants now (a walk up its parent chain in /proc).
// False for a process that is gone: a sender that exits before it is checked is not believed.
bool in_tree_of(pid_t pid, pid_t root);

// The resident memory of a tree: the sum of each process's RSS (/proc/PID/statm). Pages shared
// between processes (what a forked worker still shares copy-on-write with its master, shared
// libraries, shared memory) are counted once per process, so a tree of N forked workers reads
// higher than the memory it really uses. PSS (/proc/PID/smaps_rollup) divides shared pages among
// their users and is exact, but walks the page tables of every mapping: measured here, statm
// ~7 µs per process whatever its size; smaps_rollup ~20 µs for a small process and 0.4-0.7 ms for
// one that touched 64 MiB, growing with its memory. RSS it is: cheap at any size, and it errs on
// the safe side for --max-memory. A process that has exited counts 0.
uint64_t tree_rss_bytes(const std::vector<pid_t>& tree);

// For each tree, the number of TCP connections its processes hold open whose *local* port is one
// of `local_ports` (the service's listening ports; connections a worker opens elsewhere, say to a
// database, and clients of the service on this machine are not counted).
//
// "Held open" means accepted and still owned by a file descriptor: states ESTABLISHED, FIN_WAIT1,
// FIN_WAIT2, CLOSE_WAIT, LAST_ACK and CLOSING, with a socket inode. Not counted: the listener
// itself (LISTEN); handshakes in progress (SYN_RECV request sockets) and established connections
// still waiting in the accept queue — they are the queue, measured by TCP_INFO on the listener;
// connections the program has closed (TIME_WAIT, or FIN_WAIT/LAST_ACK without an inode). A socket
// shared by several fds or processes of one tree counts once in that tree.
//
// Cost: one NETLINK_SOCK_DIAG dump, filtered by port in the kernel, then, if any connection is
// held, one readlink per open fd of every process in the trees. The dump walks the kernel's whole
// TCP established hash (262,144 buckets here, plus every TIME_WAIT socket in it) whatever we ask
// for. Measured on this 2-core VM (kernel 6.18; a bare syscall costs 1.1 µs): 2 trees holding
// 1000 connections in all, 5.5-9 ms per call, of which the dump 1.4-2 ms and the fd links 3-6 µs
// per fd; no connection held on the ports, 1.1-1.7 ms (the dump alone). Every 250 ms that is up to
// ~3.5% of a core at 1000 connections: sample less often if that matters more than freshness.
//
// Fails if the netlink dump fails, or if a live process's fds cannot be read (EACCES: the
// supervisor lacks the right to inspect that process), rather than return a count that is short.
Result<std::vector<uint32_t>> open_connections(const std::vector<std::vector<pid_t>>& trees,
                                               const std::vector<uint16_t>& local_ports);

}  // namespace lbd
