/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The steering policy as plain C: which slot gets the next connection. The BPF program
 * (steer.bpf.c) and a host-side unit test (tests/unit/steer_policy_test.cpp) both compile this
 * file, so the rules are tested without root and without a kernel.
 *
 * Use: lbd_scan_init(), then lbd_scan_visit() for every slot 0..nr_slots-1 in order (the program
 * does it with bpf_loop(), so the verifier checks one visit instead of 64 unrolled ones), then
 * lbd_scan_choice(scan, 0) is the policy's pick; choices 1, 2, ... are the slots to try next if
 * the pick's socket turns out to be missing from the sockarray. lbd_scan_choice() is the rule as
 * written; the program makes the same choices with lbd_walk_start() and lbd_walk_next(), which
 * compute the pick once and step on from it (the unit test holds the two to the same answers).
 *
 * The promise (docs/ARCHITECTURE.md, invariant 2): a slot that is not ACTIVE is never returned. When no
 * active slot exists the answer is LBD_NO_SLOT and the caller lets the kernel choose.
 *
 * A slot whose worker says its connection table is full (lbd_slot.full) is passed over by every
 * policy while another active slot has room; when all are full, the choice is made among all of
 * them as if none were (the connection waits in an accept queue: better than refusing it).
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
	__u64 stale_after_ns;  /* least, sticky: a heartbeat older than this means stalled; 0 disables */
	__u64 client;          /* sticky: lbd_client_key() of the connection's client address */
};

struct lbd_scan {
	struct lbd_pick_args args;
	__u64 active;          /* bit i set = slot i is ACTIVE */
	__u64 full;            /* bit i set = slot i is ACTIVE and its worker's table is full */
	__u64 best_rank;       /* least, sticky: the lowest rank so far (see lbd_scan_visit) */
	__u64 tied;            /* least, sticky: bit i set = slot i is active and has best_rank */
};

/*
 * Written for the verifier as much as for the CPU: slots are bits in a mask, never positions in an
 * array indexed by a running count, and the n-th slot of a mask is found without a branch. An
 * array indexed by a count makes the verifier track that count exactly, and walk every value it
 * can take (64 of them) through the rest of the program; on a 6.18 kernel that passed its
 * 1,000,000-instruction limit.
 */

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

/*
 * sticky: rendezvous (highest-random-weight) hashing. Every slot gets a score from the client's
 * key and the slot's index, and the active slot with the highest score wins. Only a slot's own
 * clients move when it leaves (each client's scores for the other slots do not change), they come
 * back when it returns, a new slot takes the clients for which it scores highest (about 1/N), and
 * a client's second choice is simply its second-highest score. The price is one 64-bit mix per
 * visited slot, in the loop every decision runs anyway; no table to rebuild when a slot changes
 * state (docs/ARCHITECTURE.md, section 5).
 */

/* splitmix64's finalizer: each input bit flips about half of the output bits. */
static __always_inline __u64 lbd_mix64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* A client's key from its IPv4 address (network byte order, as the packet carries it). */
static __always_inline __u64 lbd_client_key_v4(__u32 addr)
{
	return lbd_mix64(0x1000000000ULL | addr);
}

/* A client's key from its IPv6 address (network byte order). An IPv4 client seen through an IPv6
 * socket (::ffff:a.b.c.d, as a dual-stack listener's connections are) has the key of a.b.c.d, so
 * it is the same client whichever way the kernel shows it. */
static __always_inline __u64 lbd_client_key_v6(const __u32 addr[4])
{
	const __u8 *third = (const __u8 *)&addr[2];

	if (addr[0] == 0 && addr[1] == 0 && third[0] == 0 && third[1] == 0 && third[2] == 0xff &&
	    third[3] == 0xff)
		return lbd_client_key_v4(addr[3]);
	return lbd_mix64(lbd_mix64(lbd_mix64(lbd_mix64(0x6000000000ULL ^ addr[0]) ^ addr[1]) ^ addr[2]) ^
			 addr[3]);
}

/* The client's score for a slot: the highest among the eligible slots wins. */
static __always_inline __u64 lbd_sticky_score(__u64 client, __u32 slot)
{
	return lbd_mix64(client ^ ((__u64)(slot + 1) * 0x9e3779b97f4a7c15ULL));
}

static __always_inline void lbd_scan_init(struct lbd_scan *s, const struct lbd_pick_args *a)
{
	s->args = *a;
	if (s->args.nr_slots > LBD_MAX_SLOTS)
		s->args.nr_slots = LBD_MAX_SLOTS;
	s->active = 0;
	s->full = 0;
	s->best_rank = ~0ULL;
	s->tied = 0;
}

/*
 * least ranks a live slot by its load; sticky ranks it by the client's score, the highest first.
 * A stalled slot ranks after every live one: it is chosen only when every active slot is stalled,
 * because queueing the connection beats refusing it. A full slot likewise ranks after every slot
 * with room. So a sticky client whose slot stalls or fills goes to its next choice meanwhile, and
 * comes back after.
 * Every slot with the lowest rank is remembered, and the cursor picks among them.
 */
static __always_inline void lbd_scan_visit(struct lbd_scan *s, __u32 i, const struct lbd_slot *slot)
{
	const __u64 stalled_penalty = 1ULL << 62;
	const __u64 full_penalty = 1ULL << 61;
	__u64 bit, rank;
	int full;

	if (!slot || i >= LBD_MAX_SLOTS || LBD_READ_ONCE(slot->state) != LBD_SLOT_ACTIVE)
		return;
	bit = 1ULL << (i & (LBD_MAX_SLOTS - 1));
	s->active |= bit;
	full = LBD_READ_ONCE(slot->full) != 0;
	if (full)
		s->full |= bit;
	if (s->args.policy == LBD_POLICY_LEAST)
		rank = lbd_slot_load(slot);
	else if (s->args.policy == LBD_POLICY_STICKY)
		rank = ~lbd_sticky_score(s->args.client, i) >> 3; /* below both penalties */
	else
		return;

	if (!lbd_slot_is_live(slot, &s->args))
		rank += stalled_penalty;
	if (full)
		rank += full_penalty;
	if (rank < s->best_rank) {
		s->best_rank = rank;
		s->tied = bit;
	} else if (rank == s->best_rank) {
		s->tied |= bit;
	}
}

/* Bits set in x (BPF has no popcount instruction: the usual sum of bit fields). */
static __always_inline __u32 lbd_bits(__u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (__u32)((x * 0x0101010101010101ULL) >> 56);
}

/* 1 when a >= b, else 0, without a branch (both below 2^32): the sign of b - a - 1. */
static __always_inline __u64 lbd_at_least(__u64 a, __u64 b)
{
	return (__u64)((__s64)b - (__s64)a - 1) >> 63;
}

/*
 * The index of the n-th (from 0) set bit of mask; n must be below lbd_bits(mask). Without a
 * branch and without a loop, in about 70 BPF instructions (a binary search over halves with a bit
 * count per step took about 170): the bit counts of every 2-, 4- and 8-bit field come from one
 * pass of lbd_bits()'s sums, a multiply turns the bytes' counts into running totals, and the
 * bytes whose running total is at most n are counted all at once (each byte's top bit is set by
 * a subtraction that cannot borrow: n and the totals are below 128). That is the byte holding the
 * bit; three halvings (4, 2, 1 bits) find it within the byte.
 */
static __always_inline __u32 lbd_nth_bit(__u64 mask, __u32 n)
{
	const __u64 bytes_ones = 0x0101010101010101ULL, bytes_top = 0x8080808080808080ULL;
	__u64 pairs = mask - ((mask >> 1) & 0x5555555555555555ULL);
	__u64 nibbles = (pairs & 0x3333333333333333ULL) + ((pairs >> 2) & 0x3333333333333333ULL);
	__u64 totals = ((nibbles + (nibbles >> 4)) & 0x0f0f0f0f0f0f0f0fULL) * bytes_ones;
	__u64 passed = ((((__u64)n * bytes_ones) | bytes_top) - totals) & bytes_top;
	__u32 place = (__u32)((((passed >> 7) * bytes_ones) >> 56) << 3);
	__u64 count, beyond;

	n -= (__u32)(((totals << 8) >> place) & 0xff); /* the set bits in the bytes before */
	count = (nibbles >> place) & 0xf;
	beyond = lbd_at_least(n, count);
	n -= (__u32)(beyond * count);
	place += (__u32)(beyond << 2);
	count = (pairs >> place) & 0x3;
	beyond = lbd_at_least(n, count);
	n -= (__u32)(beyond * count);
	place += (__u32)(beyond << 1);
	return place + (__u32)lbd_at_least(n, (mask >> place) & 0x1);
}

/* The slots a choice is made among: the active ones with room, or every active one if none has. */
static __always_inline __u64 lbd_scan_eligible(const struct lbd_scan *s)
{
	__u64 roomy = s->active & ~s->full;

	return roomy ? roomy : s->active;
}

/* Active slots seen. */
static __always_inline __u32 lbd_scan_active_count(const struct lbd_scan *s)
{
	return lbd_bits(s->active);
}

/* The policy's pick, as its rank among the eligible slots (0 = the lowest eligible index).
 * Computed once per decision; lbd_scan_choice_from() walks on from it. */
static __always_inline __u32 lbd_scan_first(const struct lbd_scan *s)
{
	__u64 eligible = lbd_scan_eligible(s);
	__u32 count = lbd_bits(eligible), ties, slot;

	if (!count)
		return 0;
	if (s->args.policy == LBD_POLICY_LEAST || s->args.policy == LBD_POLICY_STICKY) {
		/* the (cursor % ties)-th tied slot, so equal loads are served in turn */
		ties = lbd_bits(s->tied);
		if (!ties)
			return 0;
		slot = lbd_nth_bit(s->tied, s->args.cursor % ties);
		return lbd_bits(eligible & ((1ULL << slot) - 1));
	}
	if (s->args.policy == LBD_POLICY_HASH)
		return s->args.hash % count;
	return s->args.cursor % count; /* LBD_POLICY_RR */
}

/* The attempt-th slot to try, from the pick's rank `first`: 0 is the pick, then the eligible slots
 * after it in turn (for sticky too: a pick whose socket is missing is a moment of a swap, not a
 * slot leaving, so its client need not find its second choice). LBD_NO_SLOT once every eligible
 * slot has been offered. */
static __always_inline __u32 lbd_scan_choice_from(const struct lbd_scan *s, __u32 first, __u32 attempt)
{
	__u64 eligible = lbd_scan_eligible(s);
	__u32 count = lbd_bits(eligible);

	if (!count || attempt >= count)
		return LBD_NO_SLOT;
	return lbd_nth_bit(eligible, (first + attempt) % count);
}

static __always_inline __u32 lbd_scan_choice(const struct lbd_scan *s, __u32 attempt)
{
	return lbd_scan_choice_from(s, lbd_scan_first(s), attempt);
}

/*
 * The same choices, in the order lbd_scan_choice() gives them, as the program makes them: the
 * eligible slots and their count once, the pick with one division, and each further choice by
 * stepping the rank on (no division, one lbd_nth_bit()). For least and sticky the pick is the
 * chosen tied slot itself whenever it is eligible, as it is unless every slot with room is
 * stalled while a full one is live (then, as lbd_scan_first() says, the eligible slot of the same
 * rank).
 */
struct lbd_walk {
	__u64 eligible;
	__u32 count;   /* eligible slots */
	__u32 offered; /* choices made so far */
	__u32 rank;    /* the current choice's rank among the eligible slots */
	__u32 slot;    /* the current choice; LBD_NO_SLOT once every eligible slot was offered */
};

static __always_inline void lbd_walk_start(const struct lbd_scan *s, struct lbd_walk *w)
{
	__u32 ties, tied_slot;

	w->eligible = lbd_scan_eligible(s);
	w->count = lbd_bits(w->eligible);
	w->offered = 1;
	w->rank = 0;
	if (!w->count) {
		w->slot = LBD_NO_SLOT;
		return;
	}
	if (s->args.policy == LBD_POLICY_LEAST || s->args.policy == LBD_POLICY_STICKY) {
		ties = lbd_bits(s->tied);
		if (ties) {
			tied_slot = lbd_nth_bit(s->tied, s->args.cursor % ties);
			w->rank = lbd_bits(w->eligible & ((1ULL << tied_slot) - 1));
			if (w->eligible & (1ULL << tied_slot)) {
				w->slot = tied_slot;
				return;
			}
			if (w->rank >= w->count) /* every eligible slot lies below it: wrap */
				w->rank = 0;
		}
	} else if (s->args.policy == LBD_POLICY_HASH) {
		w->rank = s->args.hash % w->count;
	} else {
		w->rank = s->args.cursor % w->count;
	}
	w->slot = lbd_nth_bit(w->eligible, w->rank);
}

static __always_inline void lbd_walk_next(struct lbd_walk *w)
{
	if (w->offered >= w->count) {
		w->slot = LBD_NO_SLOT;
		return;
	}
	w->offered++;
	w->rank = w->rank + 1 >= w->count ? 0 : w->rank + 1;
	w->slot = lbd_nth_bit(w->eligible, w->rank);
}

#endif /* LBD_STEER_POLICY_H */
