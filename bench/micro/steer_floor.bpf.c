// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Test-only SK_REUSEPORT programs for bench/micro/steering_bench.cpp: the floor under the
 * steering program's cost. The kernel's run-time statistics time every run with two clock reads
 * and an indirect call into the program; these programs pay exactly that and (floor_select) the
 * one helper call that every decision of lbd_steer must make, so what the real program costs
 * above them is what lbd's policy adds. Never loaded by lbd.
 */
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} floor_sockarray SEC(".maps");

/* Lets the kernel's hash choose: the cost of running any program at all. */
SEC("sk_reuseport")
int floor_pass(struct sk_reuseport_md *md)
{
	return SK_PASS;
}

/* Selects the listener at index 0: running a program plus bpf_sk_select_reuseport. */
SEC("sk_reuseport")
int floor_select(struct sk_reuseport_md *md)
{
	__u32 index = 0;

	bpf_sk_select_reuseport(md, &floor_sockarray, &index, 0);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
