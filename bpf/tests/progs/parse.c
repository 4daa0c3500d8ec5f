// SPDX-License-Identifier: GPL-2.0
/*
 * parse.c - a full header parser, as most real XDP programs begin.
 *
 * Walks Ethernet, up to two VLAN tags (802.1Q / 802.1ad), IPv4 (with
 * options, honouring IHL), IPv6 (fixed header), then UDP, TCP, ICMP or
 * ICMPv6, checking every header against data_end before reading it.
 *
 * Tests: packet bounds checks at every layer, variable-length headers
 * (IHL * 4), byte-order conversion, array map updates from the program.
 *
 * Verdict (one per outcome, so the differential test sees what was found):
 *   truncated or malformed at any layer  XDP_DROP
 *   not IP (ARP, ...)                    XDP_PASS
 *   TCP                                  XDP_PASS
 *   UDP                                  XDP_TX
 *   ICMP / ICMPv6                        XDP_REDIRECT (plain return value)
 *   other IP protocol, IPv4 fragment     XDP_ABORTED
 *
 * Maps: last_dport[ip protocol] = L4 destination port (host order; the ICMP
 * type for ICMP), outcomes[outcome] counts packets per outcome.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Not in linux/if_ether.h's uapi on every distribution. */
struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

enum outcome {
	OUT_TRUNCATED,
	OUT_MALFORMED,
	OUT_NOT_IP,
	OUT_TCP,
	OUT_UDP,
	OUT_ICMP,
	OUT_OTHER,
	OUT_FRAGMENT,
	OUT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} last_dport SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OUT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} outcomes SEC(".maps");

static __always_inline int finish(enum outcome o, int verdict)
{
	__u32 key = o;
	__u64 *count = bpf_map_lookup_elem(&outcomes, &key);

	if (count)
		__sync_fetch_and_add(count, 1);
	return verdict;
}

static __always_inline void record_port(__u8 proto, __u32 port)
{
	__u32 key = proto;

	bpf_map_update_elem(&last_dport, &key, &port, BPF_ANY);
}

SEC("xdp")
int xdp_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l4;
	__u16 proto;
	__u8 ip_proto;
	int i;

	if ((void *)(eth + 1) > data_end)
		return finish(OUT_TRUNCATED, XDP_DROP);
	proto = eth->h_proto;
	l4 = eth + 1;

	/* Up to two VLAN tags, unrolled: the verifier sees straight-line code. */
#pragma unroll
	for (i = 0; i < 2; i++) {
		struct vlan_hdr *vh = l4;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		proto = vh->h_vlan_encapsulated_proto;
		l4 = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l4;
		__u32 hlen;

		if ((void *)(iph + 1) > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		if (iph->version != 4)
			return finish(OUT_MALFORMED, XDP_DROP);
		hlen = iph->ihl * 4;
		if (hlen < sizeof(*iph))
			return finish(OUT_MALFORMED, XDP_DROP);
		if ((void *)iph + hlen > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		/* Only the first fragment carries the L4 header. */
		if (iph->frag_off & bpf_htons(0x1fff))
			return finish(OUT_FRAGMENT, XDP_ABORTED);
		ip_proto = iph->protocol;
		l4 = (void *)iph + hlen;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = l4;

		if ((void *)(ip6h + 1) > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		if (ip6h->version != 6)
			return finish(OUT_MALFORMED, XDP_DROP);
		ip_proto = ip6h->nexthdr;
		l4 = ip6h + 1;
	} else {
		return finish(OUT_NOT_IP, XDP_PASS);
	}

	switch (ip_proto) {
	case IPPROTO_UDP: {
		struct udphdr *udph = l4;

		if ((void *)(udph + 1) > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		record_port(ip_proto, bpf_ntohs(udph->dest));
		return finish(OUT_UDP, XDP_TX);
	}
	case IPPROTO_TCP: {
		struct tcphdr *tcph = l4;

		if ((void *)(tcph + 1) > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		if (tcph->doff < 5)
			return finish(OUT_MALFORMED, XDP_DROP);
		record_port(ip_proto, bpf_ntohs(tcph->dest));
		return finish(OUT_TCP, XDP_PASS);
	}
	case IPPROTO_ICMP: {
		struct icmphdr *icmph = l4;

		if ((void *)(icmph + 1) > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		record_port(ip_proto, icmph->type);
		return finish(OUT_ICMP, XDP_REDIRECT);
	}
	case IPPROTO_ICMPV6: {
		struct icmp6hdr *icmp6h = l4;

		if ((void *)(icmp6h + 1) > data_end)
			return finish(OUT_TRUNCATED, XDP_DROP);
		record_port(ip_proto, icmp6h->icmp6_type);
		return finish(OUT_ICMP, XDP_REDIRECT);
	}
	default:
		return finish(OUT_OTHER, XDP_ABORTED);
	}
}

char _license[] SEC("license") = "GPL";
