/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The contract between the steering program (steer.bpf.c) and user space: constants, the layout
 * of the shared slot table, the stats record and the key that names a reuseport group.
 *
 * Included by the BPF program (after <linux/bpf.h>), by the policy header, and by C++ user space.
 * Changing a struct here changes a map's value size: the supervisor and every worker must come
 * from the same build (a worker checks the map's value size before it maps the table).
 */
#ifndef LBD_STEER_ABI_H
#define LBD_STEER_ABI_H

#include <linux/types.h>

/* Workers per app. A slot is a worker's stable place; its index is what X-Worker reports. */
#define LBD_MAX_SLOTS 64
/* Listen addresses per app. Each address is its own reuseport group (IPv4 and IPv6 apart). */
#define LBD_MAX_GROUPS 8
/* Index into the stats map that counts decisions with no active slot at all. */
#define LBD_NO_SLOT LBD_MAX_SLOTS

/* The slot's place in the reuseport sockarray: one row of LBD_MAX_SLOTS per group. */
#define LBD_SOCKARRAY_INDEX(group, slot) ((group) * LBD_MAX_SLOTS + (slot))
/* A starting worker's listener, reachable only by its readiness probe (struct lbd_probe_key):
 * the second half of the sockarray, same layout. A socket sits in one place at a time. */
#define LBD_PROBE_INDEX(group, slot) (LBD_MAX_GROUPS * LBD_MAX_SLOTS + LBD_SOCKARRAY_INDEX(group, slot))
#define LBD_SOCKARRAY_SIZE (2 * LBD_MAX_GROUPS * LBD_MAX_SLOTS)

/* Who may receive new connections. Only ACTIVE slots are ever chosen while one exists. */
enum lbd_slot_state {
	LBD_SLOT_EMPTY = 0,    /* no worker */
	LBD_SLOT_STARTING = 1, /* worker forked, not ready yet */
	LBD_SLOT_ACTIVE = 2,   /* serving: eligible for new connections */
	LBD_SLOT_DRAINING = 3, /* finishing its connections; never chosen */
};

/* How the program chooses among active slots. Changed at run time without re-attaching. */
enum lbd_policy {
	LBD_POLICY_RR = 0,    /* exact round-robin over active slots */
	LBD_POLICY_LEAST = 1, /* lowest load (queued + open connections), live slots only;
				 ties broken round-robin */
	LBD_POLICY_HASH = 2,  /* the kernel's flow hash, mapped onto the active slots */
	LBD_POLICY_STICKY = 3, /* the client's address picks the slot (rendezvous hashing): the same
				  client, the same slot, across connections and reloads */
};

/*
 * One entry of the slot table: a BPF_F_MMAPABLE array that the supervisor, every worker and the
 * program share. Each field has exactly one writer, so no field needs a lock:
 *   supervisor  state
 *   program     steered            (atomic add on every connection sent to the slot)
 *   worker      full, and everything in the second cache line (atomic stores, no syscall)
 * The two writers that run on every connection are kept on separate cache lines; `full` changes
 * only when a worker's connection table fills or empties, so it sits with what the program reads.
 */
struct lbd_slot {
	/* --- read by the program on every decision --- */
	__u32 state;           /* enum lbd_slot_state */
	__u32 cpu;             /* CPU the worker is pinned to, or ~0 (informational) */
	__u64 steered;         /* connections the program sent here (select + migrate) */
	__u32 full;            /* 1 while the worker's connection table is full: it has stopped
				  accepting, and every policy passes it over while another active
				  slot has room */
	__u8 pad0[44];

	/* --- written by the worker in this slot --- */
	__u64 accepted;        /* connections taken off the accept queue; also advanced by the
				  worker's reconciliation with the real queue length (see worker) */
	__u64 heartbeat_ns;    /* CLOCK_MONOTONIC time of the worker's last loop turn */
	__u64 requests;        /* requests answered */
	__u32 open;            /* connections currently open (one RAII token each) */
	__u32 inflight;        /* requests received and not yet answered */
	__u32 pid;             /* worker pid, for status */
	__u8 pad1[28];
};

/* Per-CPU counters per slot, summed by user space. Entry LBD_NO_SLOT counts `fallback`:
 * decisions where no active slot existed and the kernel's hash chose. */
struct lbd_slot_stats {
	__u64 selected;       /* new connections steered to this slot */
	__u64 migrated;       /* queued/half-open connections moved here from a closing listener */
	__u64 select_failed;  /* chosen but its socket was missing from the sockarray; retried */
	__u64 fallback;       /* only in entry LBD_NO_SLOT, see above */
};

/* Names a reuseport group the way the program sees it: the listener's bound family, address and
 * port (host byte order for the port, network order for the address, as in struct bpf_sock). */
struct lbd_group_key {
	__u32 family;  /* AF_INET or AF_INET6 */
	__u32 port;
	__u32 addr[4]; /* IPv4 in addr[0]; zero for a wildcard bind */
};

/* A readiness probe: the supervisor's own connection to a starting program's listener (exec mode),
 * named by its source address and port. The program sends it to the listener in the probe place
 * the entry names, whatever the slot's state, and says it did; once the program takes it off its
 * queue, the program is accepting, so it is ready. Address in network order (IPv4 in addr[0]),
 * port in host order. */
struct lbd_probe_key {
	__u32 family; /* AF_INET or AF_INET6 */
	__u32 port;
	__u32 addr[4];
};

struct lbd_probe {
	__u32 place;     /* LBD_PROBE_INDEX of the starting listener (written by user space) */
	__u32 delivered; /* set by the program once the probe's SYN went there: only then does an
			    empty queue mean the listener's program took it */
};

#endif /* LBD_STEER_ABI_H */
