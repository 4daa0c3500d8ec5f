// SPDX-License-Identifier: GPL-2.0
/*
 * tailcall.c - a dispatcher that tail-calls per-protocol programs through a
 * program array, the layout of multi-stage XDP pipelines.
 *
 *   xdp_dispatch   entry: IPv4 -> jmp_table[0], IPv6 -> jmp_table[1],
 *                  anything else -> jmp_table[3], which the test leaves
 *                  empty, so the call falls through: XDP_DROP
 *   xdp_ipv4       decrements the TTL (no checksum fix: this is a test),
 *                  UDP continues in jmp_table[2], the rest XDP_PASS
 *   xdp_ipv6       decrements the hop limit, UDP continues in jmp_table[2],
 *                  the rest XDP_TX
 *   xdp_udp        the last stage: XDP_TX
 *
 * Every stage counts itself in hits[stage], so the map shows the path each
 * packet took. Tests: bpf_tail_call (including a chained one and a call to
 * an empty slot), several programs in one object sharing maps.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

enum { STAGE_DISPATCH, STAGE_IPV4, STAGE_IPV6, STAGE_UDP, STAGE_FALLTHROUGH, STAGE_MAX };
enum { SLOT_IPV4, SLOT_IPV6, SLOT_UDP, SLOT_EMPTY, SLOT_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, SLOT_MAX);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} jmp_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAGE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void hit(__u32 stage)
{
	__u64 *n = bpf_map_lookup_elem(&hits, &stage);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("xdp")
int xdp_dispatch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	hit(STAGE_DISPATCH);
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		bpf_tail_call(ctx, &jmp_table, SLOT_IPV4);
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		bpf_tail_call(ctx, &jmp_table, SLOT_IPV6);
	else
		bpf_tail_call(ctx, &jmp_table, SLOT_EMPTY);
	/* Reached only when the tail call failed. */
	hit(STAGE_FALLTHROUGH);
	return XDP_DROP;
}

SEC("xdp")
int xdp_ipv4(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);

	hit(STAGE_IPV4);
	if ((void *)(iph + 1) > data_end)
		return XDP_DROP;
	iph->ttl--;
	if (iph->protocol == IPPROTO_UDP)
		bpf_tail_call(ctx, &jmp_table, SLOT_UDP);
	return XDP_PASS;
}

SEC("xdp")
int xdp_ipv6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6h = data + sizeof(struct ethhdr);

	hit(STAGE_IPV6);
	if ((void *)(ip6h + 1) > data_end)
		return XDP_DROP;
	ip6h->hop_limit--;
	if (ip6h->nexthdr == IPPROTO_UDP)
		bpf_tail_call(ctx, &jmp_table, SLOT_UDP);
	return XDP_TX;
}

SEC("xdp")
int xdp_udp(struct xdp_md *ctx)
{
	hit(STAGE_UDP);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
