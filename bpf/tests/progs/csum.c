// SPDX-License-Identifier: GPL-2.0
/*
 * csum.c - incremental IPv4 header checksum updates with bpf_csum_diff, as
 * a NAT or a router does after rewriting fields.
 *
 * For IPv4 (IHL 5) frames: verify the received header's checksum (a full
 * bpf_csum_diff over the 20 bytes in the packet must fold to 0xffff);
 * packets that fail verification are dropped. Otherwise decrement the TTL
 * and rewrite the destination to 203.0.113.9, each fixed up with
 * bpf_csum_diff over the changed 32-bit word (old word out, new word in,
 * seeded with the complement of the current checksum), then XDP_TX.
 * TTL <= 1 is dropped. Non-IPv4 passes.
 *
 * Tests: bpf_csum_diff with packet and stack pointers, a zero-length
 * "from", the seed, folding. Map: raw[0] = the raw helper result of the
 * verification, raw[1] = of the address rewrite (as __s64: the helper's
 * unfolded value is what a program sees).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __s64);
} raw SEC(".maps");

static __always_inline void record(__u32 key, __s64 v)
{
	bpf_map_update_elem(&raw, &key, &v, BPF_ANY);
}

static __always_inline __u16 csum_fold(__s64 csum)
{
	__u32 sum = csum;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

SEC("xdp")
int xdp_csum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	__be32 old_word, new_word, new_daddr;
	__s64 c;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_DROP;
	if (iph->ihl != 5)
		return XDP_PASS;

	c = bpf_csum_diff(0, 0, (__be32 *)iph, sizeof(*iph), 0);
	record(0, c);
	if (csum_fold(c) != 0)
		return XDP_DROP;
	if (iph->ttl <= 1)
		return XDP_DROP;

	/* TTL shares a 32-bit word with the protocol and the checksum; the
	 * checksum field is zeroed in both copies so it does not count. */
	old_word = *(__be32 *)&iph->ttl & bpf_htonl(0xffff0000);
	iph->ttl--;
	new_word = *(__be32 *)&iph->ttl & bpf_htonl(0xffff0000);
	c = bpf_csum_diff(&old_word, 4, &new_word, 4, ~((__u32)iph->check) & 0xffff);
	iph->check = csum_fold(c);

	new_daddr = bpf_htonl(0xcb007109); /* 203.0.113.9 */
	c = bpf_csum_diff(&iph->daddr, 4, &new_daddr, 4, ~((__u32)iph->check) & 0xffff);
	record(1, c);
	iph->daddr = new_daddr;
	iph->check = csum_fold(c);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
