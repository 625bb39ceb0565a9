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

/* A listener's bound address -> its group's row in the sockarray. */
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

/* Set before load: a slot whose heartbeat is older than this is treated as stalled by `least`. */
const volatile __u64 stale_after_ns = 50 * 1000 * 1000;

/* Changed by user space at run time through the skeleton's mmapped .bss. */
volatile __u32 policy = LBD_POLICY_LEAST;
volatile __u32 nr_slots;
/* Shared round-robin ticket; every decision takes the next one. */
__u32 rr_cursor;
/* Entries in `probes`, kept by user space: while it is 0 a connection costs no probe lookup. */
volatile __u32 probes_pending;

static __always_inline struct lbd_slot_stats *stats_for(__u32 slot)
{
	return bpf_map_lookup_elem(&stats, &slot);
}

static __always_inline int group_of(const struct bpf_sock *sk, __u32 *group)
{
	struct lbd_group_key key = {};
	__u32 *row;

	key.family = sk->family;
	key.port = sk->src_port;
	if (key.family == AF_INET) {
		key.addr[0] = sk->src_ip4;
	} else if (key.family == AF_INET6) {
		key.addr[0] = sk->src_ip6[0];
		key.addr[1] = sk->src_ip6[1];
		key.addr[2] = sk->src_ip6[2];
		key.addr[3] = sk->src_ip6[3];
	} else {
		return -1;
	}
	row = bpf_map_lookup_elem(&groups, &key);
	if (!row)
		return -1;
	*group = *row;
	return 0;
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
	struct bpf_sock *sk = md->sk;
	int migrating = md->migrating_sk != NULL;
	__u32 group, attempt, first;

	if (!sk || group_of(sk, &group) || group >= LBD_MAX_GROUPS)
		return fall_back();
	/* Not counted in the stats: a probe is lbd's own connection, not a client's. */
	if (!migrating && probes_pending && select_probe_target(md) == 0)
		return SK_PASS;

	args.policy = policy;
	args.nr_slots = nr_slots;
	args.hash = md->hash;
	args.stale_after_ns = stale_after_ns;
	args.now_ns = bpf_ktime_get_coarse_ns();
	/* Only the policies that take turns touch the shared cursor: it is a cache line every CPU
	 * writes. */
	if (args.policy == LBD_POLICY_RR || args.policy == LBD_POLICY_LEAST)
		args.cursor = __sync_fetch_and_add(&rr_cursor, 1);
	else if (args.policy == LBD_POLICY_STICKY)
		args.client = client_key(md);
	lbd_scan_init(&scan, &args);
	bpf_loop(scan.args.nr_slots, visit_slot, &scan, 0);
	first = lbd_scan_first(&scan);

	for (attempt = 0; attempt < LBD_SELECT_ATTEMPTS; attempt++) {
		struct lbd_slot_stats *st;
		struct lbd_slot *slot_info;
		__u32 slot = lbd_scan_choice_from(&scan, first, attempt);
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
	}
	return fall_back();
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
