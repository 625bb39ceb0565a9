/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The steering policy as plain C: which slot gets the next connection. The BPF program
 * (steer.bpf.c) and a host-side unit test (tests/unit/steer_policy_test.cpp) both compile this
 * file, so the rules are tested without root and without a kernel.
 *
 * Use: lbd_scan_init(), then lbd_scan_visit() for every slot 0..nr_slots-1 in order (the program
 * does it with bpf_loop(), so the verifier checks one visit instead of 64 unrolled ones), then
 * lbd_scan_choice(scan, 0) is the policy's pick; choices 1, 2, ... are the slots to try next if
 * the pick's socket turns out to be missing from the sockarray.
 *
 * The promise (DESIGN.md invariant 2): a slot that is not ACTIVE is never returned. When no
 * active slot exists the answer is LBD_NO_SLOT and the caller lets the kernel choose.
 */
#ifndef LBD_STEER_POLICY_H
#define LBD_STEER_POLICY_H

#include "steer_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Fields other writers change under us are read exactly once per decision. */
#define LBD_READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))

struct lbd_pick_args {
	__u32 policy;          /* enum lbd_policy */
	__u32 nr_slots;        /* slots [0, nr_slots) are visited */
	__u32 cursor;          /* this decision's round-robin ticket (a shared counter, +1 per call) */
	__u32 hash;            /* the kernel's flow hash of the connection */
	__u64 now_ns;          /* CLOCK_MONOTONIC (coarse) now */
	__u64 stale_after_ns;  /* least: a heartbeat older than this means stalled; 0 disables */
};

struct lbd_scan {
	struct lbd_pick_args args;
	__u32 count;           /* active slots seen */
	__u64 best_rank;       /* least: the lowest rank so far (load, plus a penalty if stalled) */
	__u64 tied;            /* least: bit p set = eligible[p] has best_rank */
	__u8 eligible[LBD_MAX_SLOTS]; /* active slots in index order */
};

/*
 * A slot's load: connections sent to it that it has not finished. "Sent but not yet accepted"
 * (steered - accepted) is what makes a stalled worker look busy rather than idle; `open` is what
 * it accepted and still holds. The subtraction is signed because the worker's reconciliation may
 * briefly move `accepted` past `steered`.
 */
static __always_inline __u64 lbd_slot_load(const struct lbd_slot *s)
{
	__s64 queued = (__s64)(LBD_READ_ONCE(s->steered) - LBD_READ_ONCE(s->accepted));

	return (queued > 0 ? (__u64)queued : 0) + LBD_READ_ONCE(s->open);
}

/* A worker stamps its heartbeat on every loop turn, and at least every 10 ms when idle. A stamp
 * from the future (the two clocks are read on different CPUs) counts as live. */
static __always_inline int lbd_slot_is_live(const struct lbd_slot *s,
					    const struct lbd_pick_args *a)
{
	__u64 beat = LBD_READ_ONCE(s->heartbeat_ns);

	if (!a->stale_after_ns || beat >= a->now_ns)
		return 1;
	return a->now_ns - beat <= a->stale_after_ns;
}

static __always_inline void lbd_scan_init(struct lbd_scan *s, const struct lbd_pick_args *a)
{
	s->args = *a;
	if (s->args.nr_slots > LBD_MAX_SLOTS)
		s->args.nr_slots = LBD_MAX_SLOTS;
	s->count = 0;
	s->best_rank = ~0ULL;
	s->tied = 0;
}

/*
 * least ranks a live slot by its load. A stalled slot ranks after every live one: it is chosen
 * only when every active slot is stalled, because queueing the connection beats refusing it.
 * Every slot with the lowest rank is remembered, and the cursor picks among them.
 */
static __always_inline void lbd_scan_visit(struct lbd_scan *s, __u32 i, const struct lbd_slot *slot)
{
	const __u64 stalled_penalty = 1ULL << 62;
	__u32 position;
	__u64 rank;

	if (!slot || i >= LBD_MAX_SLOTS || LBD_READ_ONCE(slot->state) != LBD_SLOT_ACTIVE)
		return;
	position = s->count & (LBD_MAX_SLOTS - 1);
	s->eligible[position] = (__u8)i;
	s->count++;
	if (s->args.policy != LBD_POLICY_LEAST)
		return;

	rank = lbd_slot_load(slot);
	if (!lbd_slot_is_live(slot, &s->args))
		rank += stalled_penalty;
	if (rank < s->best_rank) {
		s->best_rank = rank;
		s->tied = 1ULL << position;
	} else if (rank == s->best_rank) {
		s->tied |= 1ULL << position;
	}
}

/* least: the (cursor % ties)-th of the tied positions, so equal loads are served in turn. */
static __always_inline __u32 lbd_tied_position(const struct lbd_scan *s)
{
	__u32 ties = __builtin_popcountll(s->tied), k, p;

	if (!ties)
		return 0;
	k = s->args.cursor % ties;
	for (p = 0; p < LBD_MAX_SLOTS; p++) {
		if (!(s->tied & (1ULL << p)))
			continue;
		if (k-- == 0)
			return p;
	}
	return 0;
}

/* The attempt-th slot to try: 0 is the policy's pick, then the active slots after it in turn.
 * LBD_NO_SLOT once every active slot has been offered. */
static __always_inline __u32 lbd_scan_choice(const struct lbd_scan *s, __u32 attempt)
{
	__u32 first;

	if (!s->count || attempt >= s->count)
		return LBD_NO_SLOT;
	if (s->args.policy == LBD_POLICY_LEAST)
		first = lbd_tied_position(s);
	else if (s->args.policy == LBD_POLICY_HASH)
		first = s->args.hash % s->count;
	else
		first = s->args.cursor % s->count; /* LBD_POLICY_RR */
	return s->eligible[((first + attempt) % s->count) & (LBD_MAX_SLOTS - 1)];
}

#endif /* LBD_STEER_POLICY_H */
