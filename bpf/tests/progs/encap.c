// SPDX-License-Identifier: GPL-2.0
/*
 * encap.c - IP-in-IP tunnelling with bpf_xdp_adjust_head.
 *
 * An IPv4 packet that is already IP-in-IP (protocol 4) is decapsulated: the
 * Ethernet header moves forward over the outer IPv4 header and the head is
 * advanced past it (adjust_head(+outer length)); verdict XDP_PASS.
 * Any other IPv4 packet is encapsulated: the head grows by 20 bytes
 * (adjust_head(-20)), the Ethernet header moves to the new start and a new
 * outer IPv4 header (192.0.2.1 -> 192.0.2.2, TTL 64, checksum computed in a
 * loop) goes between it and the original packet; verdict XDP_TX.
 * Non-IPv4 frames pass untouched.
 *
 * Tests: adjust_head in both directions, re-reading data/data_end after the
 * helper (old packet pointers are invalid), writes into the new headroom,
 * a checksum loop, and the helper's error path (a decap that would leave
 * fewer than 14 bytes fails with -EINVAL and the program aborts).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Last adjust_head return value per direction: 0 = encap, 1 = decap. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __s64);
} adjust_ret SEC(".maps");

static __always_inline void record(__u32 key, long ret)
{
	__s64 v = ret;

	bpf_map_update_elem(&adjust_ret, &key, &v, BPF_ANY);
}

static __always_inline __u16 ip_checksum(const struct iphdr *iph)
{
	const __u16 *w = (const __u16 *)iph;
	__u32 sum = 0;
	int i;

	for (i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline int decap(struct xdp_md *ctx, __u32 outer_len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth;
	long ret;

	if (data + sizeof(eth) > data_end)
		return XDP_DROP;
	__builtin_memcpy(&eth, data, sizeof(eth));

	ret = bpf_xdp_adjust_head(ctx, outer_len);
	record(1, ret);
	if (ret)
		return XDP_ABORTED;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, &eth, sizeof(eth));
	return XDP_PASS;
}

static __always_inline int encap(struct xdp_md *ctx, __u16 inner_len)
{
	void *data, *data_end;
	struct ethhdr eth, *neth;
	struct iphdr *outer;
	long ret;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(eth) > data_end)
		return XDP_DROP;
	__builtin_memcpy(&eth, data, sizeof(eth));

	ret = bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr));
	record(0, ret);
	if (ret)
		return XDP_ABORTED;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	neth = data;
	outer = (void *)(neth + 1);
	if ((void *)(outer + 1) > data_end)
		return XDP_DROP;

	__builtin_memcpy(neth, &eth, sizeof(eth));
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = 0;
	outer->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
	outer->id = 0;
	outer->frag_off = bpf_htons(0x4000); /* DF */
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = bpf_htonl(0xc0000201); /* 192.0.2.1 */
	outer->daddr = bpf_htonl(0xc0000202); /* 192.0.2.2 */
	outer->check = ip_checksum(outer);
	return XDP_TX;
}

SEC("xdp")
int xdp_ipip(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_DROP;
	if (iph->ihl < 5)
		return XDP_DROP;

	if (iph->protocol == IPPROTO_IPIP)
		return decap(ctx, iph->ihl * 4);
	return encap(ctx, bpf_ntohs(iph->tot_len));
}

char _license[] SEC("license") = "GPL";
