// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * lbd's connection steering program.
 *
 * Type BPF_PROG_TYPE_SK_REUSEPORT, attach type BPF_SK_REUSEPORT_SELECT_OR_MIGRATE (kernel >= 5.14).
 * Attached to every reuseport group lbd owns (one per listen address). The kernel runs it
 *   - for each new connection (SYN) that reaches the group: pick the worker's listener;
 *   - for each queued or half-open connection of a listener that is closing or shut down
 *     (md->migrating_sk set): pick the listener that inherits it, so a drain, reload or crash
 *     resets nothing (docs/ARCHITECTURE.md, invariant 1).
 * It never chooses a slot that is not ACTIVE while an ACTIVE one exists (invariant 2): if the
 * chosen slot's socket turns out to be missing it retries without that slot, and it leaves the
 * choice to the kernel's hash only when no active slot is left at all.
 */
/* Only UAPI context structs (struct sk_reuseport_md, struct bpf_sock) are read, and the verifier
 * rewrites their accesses for the running kernel: <linux/bpf.h> is enough, no vmlinux.h, no BTF
 * of the build machine (docs/ARCHITECTURE.md, section 4). */
#include <linux/bpf.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer_abi.h"
#include "steer_policy.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6

/* slot -> the worker's listening socket, one row of LBD_MAX_SLOTS per reuseport group; then the
 * probe places of starting workers (LBD_PROBE_INDEX). */
struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, LBD_SOCKARRAY_SIZE);
	__type(key, __u32);
	__type(value, __u64);
} sockarray SEC(".maps");

/* The slot table shared with the supervisor and the workers (mmapped, see steer_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LBD_MAX_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct lbd_slot);
} slot_table SEC(".maps");

/* Decisions per slot, per CPU; entry LBD_NO_SLOT counts fallbacks to the kernel's hash. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LBD_MAX_SLOTS + 1);
	__type(key, __u32);
	__type(value, struct lbd_slot_stats);
} stats SEC(".maps");

/* A listener's bound address -> its group's row in the sockarray. The program reads the copy in
 * config.group_keys below; this map is what a successor lbd adopts (Steering::adopt rebuilds the
 * copy from it), so it stays, with its layout, for lbds of other builds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LBD_MAX_GROUPS);
	__type(key, struct lbd_group_key);
	__type(value, __u32);
} groups SEC(".maps");

/* Readiness probes in flight: the probe's source -> its LBD_PROBE_INDEX place in the sockarray. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LBD_MAX_GROUPS * LBD_MAX_SLOTS);
	__type(key, struct lbd_probe_key);
	__type(value, struct lbd_probe);
} probes SEC(".maps");

/* Set before load: a slot whose heartbeat is older than this is treated as stalled by `least`;
 * by `sticky`, only once it is older than the second, longer bound: moving a client costs it
 * whatever its worker held for it, a wait of a few hundred ms does not. */
const volatile __u64 stale_after_ns = 50 * 1000 * 1000;
const volatile __u64 sticky_stale_after_ns = 1000 * 1000 * 1000;

/*
 * Changed by user space at run time through the skeleton's mmapped .bss. Every decision reads
 * these: one struct, so they share a cache line in this order (separate variables are laid out as
 * the compiler likes, and took two lines, and `policy`, with an initializer, a third in .data).
 */
volatile struct {
	/* enum lbd_policy; RR (0) until user space sets it, which it does before the program is
	 * attached anywhere (Steering::load, Steering::adopt) */
	__u32 policy;
	__u32 nr_slots;
	/* Entries in `probes`, kept by user space: while it is 0 a connection costs no probe
	 * lookup. */
	__u32 probes_pending;
	/* Shared round-robin ticket; every rr and least decision takes the next one. Read-mostly
	 * fields share its line on purpose: the policy that writes it is the only one running. */
	__u32 rr_cursor;
	/* The groups by row: the keys of `groups`, rows 0..nr_groups-1, each written by user space
	 * before it raises nr_groups. Looked through in order rather than looked up in the hash
	 * map: with a few groups, comparing keys on the line the decision reads anyway costs a few
	 * nanoseconds, where hashing the key and reading a bucket and an element (lines nothing
	 * else on the path touches, so cold) cost about 70 ns (README, "The decision's cost"). */
	__u32 nr_groups;
	struct lbd_group_key group_keys[LBD_MAX_GROUPS];
} config;

static __always_inline struct lbd_slot_stats *stats_for(__u32 slot)
{
	return bpf_map_lookup_elem(&stats, &slot);
}

/* The row of the listener's group, or -1: the first of config.group_keys that names its family,
 * port and address (the key the lookup in `groups` would find). */
static __always_inline int group_of(struct sk_reuseport_md *md)
{
	struct bpf_sock *sk = md->sk;
	__u32 family, port, a0, a1 = 0, a2 = 0, a3 = 0, n = config.nr_groups, row;

	if (!sk)
		return -1;
	family = sk->family;
	port = sk->src_port;

	/* Each field is read in its own branch and pinned there (the empty asm): otherwise clang
	 * merges the two reads of the first address word into one load through a pointer it
	 * computes from sk, which the verifier refuses (pointer arithmetic on a socket). */
	if (family == AF_INET) {
		a0 = sk->src_ip4;
		asm volatile("" : "+r"(a0));
	} else if (family == AF_INET6) {
		a0 = sk->src_ip6[0];
		a1 = sk->src_ip6[1];
		a2 = sk->src_ip6[2];
		a3 = sk->src_ip6[3];
		asm volatile("" : "+r"(a0));
	} else {
		return -1;
	}
	for (row = 0; row < LBD_MAX_GROUPS && row < n; row++) {
		const struct lbd_group_key *key = (const struct lbd_group_key *)&config.group_keys[row];

		if (key->port == port && key->family == family && key->addr[0] == a0 &&
		    key->addr[1] == a1 && key->addr[2] == a2 && key->addr[3] == a3) {
			return row;
		}
	}
	return -1;
}

static __always_inline int fall_back(void)
{
	struct lbd_slot_stats *st = stats_for(LBD_NO_SLOT);

	if (st)
		st->fallback++;
	/* SK_PASS without a selection: the kernel picks by hash among the group's listeners. */
	return SK_PASS;
}

/* The source address of the packet the decision is about (a SYN, or the ACK that completes a
 * migrating handshake), read from the IP header: family AF_INET with the address in addr[0], or
 * AF_INET6. Network byte order. */
static __always_inline int packet_source(struct sk_reuseport_md *md, __u32 *family, __u32 addr[4])
{
	if (md->eth_protocol == bpf_htons(ETH_P_IP)) {
		*family = AF_INET;
		return bpf_skb_load_bytes_relative(md, 12, &addr[0], 4, BPF_HDR_START_NET) ? -1 : 0;
	}
	if (md->eth_protocol == bpf_htons(ETH_P_IPV6)) {
		*family = AF_INET6;
		return bpf_skb_load_bytes_relative(md, 8, addr, 16, BPF_HDR_START_NET) ? -1 : 0;
	}
	return -1;
}

/*
 * sticky: the key of the connection's client (steer_policy.h). A migrating connection is asked
 * about by its socket, whose peer is the client: a listener that closes with finished handshakes
 * in its queue hands them on without any packet. A new connection, by its SYN's source. A client
 * whose address cannot be read gets key 0: steered consistently still, all such together. Not
 * inlined, for the same reason as select_probe_target below.
 */
static __noinline __u64 client_key(struct sk_reuseport_md *md)
{
	struct bpf_sock *migrating = md->migrating_sk;
	__u32 addr[4] = {}, family = 0;

	if (migrating) {
		if (migrating->family == AF_INET)
			return lbd_client_key_v4(migrating->dst_ip4);
		addr[0] = migrating->dst_ip6[0];
		addr[1] = migrating->dst_ip6[1];
		addr[2] = migrating->dst_ip6[2];
		addr[3] = migrating->dst_ip6[3];
		return lbd_client_key_v6(addr);
	}
	if (packet_source(md, &family, addr))
		return 0;
	return family == AF_INET ? lbd_client_key_v4(addr[0]) : lbd_client_key_v6(addr);
}

/*
 * A readiness probe goes to the starting worker it is meant for, and nowhere else; every other
 * connection returns -1 here. data starts at the TCP header (the kernel has pulled the IP header),
 * which is still readable relative to the network header. Not inlined: in its own frame it
 * leaves the caller's stack as it found it, so the verifier can merge the paths after the call
 * (inlined, the probe's key on the stack doubled the states of everything after it).
 */
static __noinline int select_probe_target(struct sk_reuseport_md *md)
{
	struct lbd_probe_key key = {};
	__u16 source_port;
	struct lbd_probe *probe;

	if (md->ip_protocol != IPPROTO_TCP ||
	    bpf_skb_load_bytes(md, 0, &source_port, sizeof(source_port)))
		return -1;
	key.port = bpf_ntohs(source_port);
	if (packet_source(md, &key.family, key.addr))
		return -1;
	probe = bpf_map_lookup_elem(&probes, &key);
	if (!probe || bpf_sk_select_reuseport(md, &sockarray, &probe->place, 0))
		return -1;
	probe->delivered = 1;
	return 0;
}

/* Tries this many slots before giving up; each failure moves on to the next active slot. */
#define LBD_SELECT_ATTEMPTS 4

static long visit_slot(__u32 index, void *ctx)
{
	const struct lbd_slot *slot = bpf_map_lookup_elem(&slot_table, &index);

	lbd_scan_visit(ctx, index, slot);
	return 0;
}

SEC("sk_reuseport/migrate")
int lbd_steer(struct sk_reuseport_md *md)
{
	struct lbd_pick_args args = {};
	struct lbd_scan scan;
	struct lbd_walk walk;
	int migrating = md->migrating_sk != NULL;
	__u32 attempt;
	int group = group_of(md);

	if (group < 0 || group >= LBD_MAX_GROUPS)
		return fall_back();
	/* Not counted in the stats: a probe is lbd's own connection, not a client's. */
	if (!migrating && config.probes_pending && select_probe_target(md) == 0)
		return SK_PASS;

	args.policy = config.policy;
	args.nr_slots = config.nr_slots;
	args.hash = md->hash;
	/* Only the policies that judge liveness read the clock. */
	if (args.policy == LBD_POLICY_LEAST || args.policy == LBD_POLICY_STICKY) {
		args.stale_after_ns =
			args.policy == LBD_POLICY_STICKY ? sticky_stale_after_ns : stale_after_ns;
		args.now_ns = bpf_ktime_get_coarse_ns();
	}
	/* Only the policies that take turns touch the shared cursor: it is a cache line every CPU
	 * writes. */
	if (args.policy == LBD_POLICY_RR || args.policy == LBD_POLICY_LEAST)
		args.cursor = __sync_fetch_and_add(&config.rr_cursor, 1);
	else if (args.policy == LBD_POLICY_STICKY)
		args.client = client_key(md);
	lbd_scan_init(&scan, &args);
	/* bpf_loop(), which the verifier checks one visit of, and turns into a plain loop of direct
	 * calls (5.19+). A bounded loop in the program itself keeps the scan in registers, but the
	 * verifier then follows every mask and best rank the loop can produce and passes its
	 * 1,000,000 instructions (tried, on 6.18). */
	bpf_loop(scan.args.nr_slots, visit_slot, &scan, 0);

	lbd_walk_start(&scan, &walk);
	for (attempt = 0; attempt < LBD_SELECT_ATTEMPTS; attempt++) {
		struct lbd_slot_stats *st;
		struct lbd_slot *slot_info;
		__u32 slot = walk.slot;
		__u32 index;

		if (slot >= LBD_MAX_SLOTS)
			break;
		index = LBD_SOCKARRAY_INDEX(group, slot);
		st = stats_for(slot);
		if (bpf_sk_select_reuseport(md, &sockarray, &index, 0) == 0) {
			slot_info = bpf_map_lookup_elem(&slot_table, &slot);
			if (slot_info)
				__sync_fetch_and_add(&slot_info->steered, 1);
			if (st) {
				if (migrating)
					st->migrated++;
				else
					st->selected++;
			}
			return SK_PASS;
		}
		/* The slot is active but its socket is gone from the sockarray (it closed a moment
		 * ago, or a swap is in progress): offer the connection to the next one. */
		if (st)
			st->select_failed++;
		lbd_walk_next(&walk);
	}
	return fall_back();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
