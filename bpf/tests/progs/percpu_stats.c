// SPDX-License-Identifier: GPL-2.0
/*
 * percpu_stats.c - per-CPU counters of packets and bytes by frame class,
 * the lock-free statistics pattern (each CPU writes only its own copy, the
 * reader sums them).
 *
 * Classes: 0 IPv4, 1 IPv6, 2 VLAN-tagged, 3 ARP, 4 other, 5 runt (shorter
 * than an Ethernet header), 6 total. Every frame passes.
 *
 * Tests: BPF_MAP_TYPE_PERCPU_ARRAY lookups and plain (non-atomic) updates of
 * the running CPU's value. The differential test compares the sum over
 * CPUs (the kernel runs the program on whichever CPU the test thread is on).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

enum { C_IPV4, C_IPV6, C_VLAN, C_ARP, C_OTHER, C_RUNT, C_TOTAL, C_MAX };

struct counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} stats SEC(".maps");

static __always_inline void bump(__u32 class, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&stats, &class);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

SEC("xdp")
int xdp_percpu_stats(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u64 len = data_end - data;
	__u32 class;

	bump(C_TOTAL, len);
	if ((void *)(eth + 1) > data_end) {
		bump(C_RUNT, len);
		return XDP_PASS;
	}
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		class = C_IPV4;
		break;
	case bpf_htons(ETH_P_IPV6):
		class = C_IPV6;
		break;
	case bpf_htons(ETH_P_8021Q):
	case bpf_htons(ETH_P_8021AD):
		class = C_VLAN;
		break;
	case bpf_htons(ETH_P_ARP):
		class = C_ARP;
		break;
	default:
		class = C_OTHER;
	}
	bump(class, len);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
