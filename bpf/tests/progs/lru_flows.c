// SPDX-License-Identifier: GPL-2.0
/*
 * lru_flows.c - a flow table: packets and bytes per 5-tuple in an LRU hash,
 * for IPv4 and IPv6 TCP and UDP (VLAN tags are skipped).
 *
 * A new flow is inserted with BPF_NOEXIST; an existing one is updated in
 * place with atomic adds. The table is far larger than the test's flow
 * count, so no entry is evicted and its contents are deterministic.
 * Packets that are not TCP/UDP over IP pass uncounted; truncated ones are
 * dropped. Every counted packet passes.
 *
 * Tests: LRU hash insert and lookup with a struct key whose padding is
 * zeroed, 16-byte address copies, atomic adds into a hash value, and the
 * update helper's flags. Map: flows, plus inserts[0] = new flows seen.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

struct flow_key {
	__u32 src[4]; /* IPv4 uses src[0] and dst[0] */
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u16 pad;
};

struct flow_stats {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} inserts SEC(".maps");

SEC("xdp")
int xdp_lru_flows(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct flow_key key;
	struct flow_stats *st, init;
	__u16 proto;
	void *l4;
	__u32 zero = 0;
	__u64 *n;

	__builtin_memset(&key, 0, sizeof(key));
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	proto = eth->h_proto;
	l4 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vh = l4;

		if ((void *)(vh + 1) > data_end)
			return XDP_DROP;
		proto = vh->h_vlan_encapsulated_proto;
		l4 = vh + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = l4;

		if ((void *)(iph + 1) > data_end)
			return XDP_DROP;
		if (iph->ihl < 5)
			return XDP_DROP;
		key.src[0] = iph->saddr;
		key.dst[0] = iph->daddr;
		key.proto = iph->protocol;
		key.family = 4;
		l4 = (void *)iph + iph->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = l4;

		if ((void *)(ip6h + 1) > data_end)
			return XDP_DROP;
		__builtin_memcpy(key.src, &ip6h->saddr, 16);
		__builtin_memcpy(key.dst, &ip6h->daddr, 16);
		key.proto = ip6h->nexthdr;
		key.family = 6;
		l4 = ip6h + 1;
	} else {
		return XDP_PASS;
	}

	if (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP) {
		/* Ports sit at the same offsets in TCP and UDP. */
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return XDP_DROP;
		key.sport = bpf_ntohs(uh->source);
		key.dport = bpf_ntohs(uh->dest);
	} else {
		return XDP_PASS;
	}

	st = bpf_map_lookup_elem(&flows, &key);
	if (st) {
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, data_end - data);
		return XDP_PASS;
	}
	init.packets = 1;
	init.bytes = data_end - data;
	if (bpf_map_update_elem(&flows, &key, &init, BPF_NOEXIST) == 0) {
		n = bpf_map_lookup_elem(&inserts, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
