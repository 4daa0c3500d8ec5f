// SPDX-License-Identifier: GPL-2.0
/*
 * subprog.c - bpf-to-bpf calls: the program is split into non-inlined
 * functions, as larger programs are.
 *
 *   parse_l3        static __noinline, returns the ethertype after an
 *                   optional VLAN tag and the L3 offset through a pointer
 *                   to the caller's stack
 *   l4_dport        static __noinline, five arguments (the most BPF
 *                   passes in registers) including a packet pointer,
 *                   returns the destination port (if >= min_port) or -1
 *   count           static __noinline, calls a helper (map update) from
 *                   a subprogram
 *   classify        a global function: verified on its own by Linux, with
 *                   only the context as argument
 *
 * The verdict is classify()'s (XDP_TX for ports below 1024); ports go to
 * ports[0] (IPv4) and ports[1] (IPv6), call counts to calls[fn].
 * Tests: BPF_PSEUDO_CALL, stack frames per call, pointers into the
 * caller's stack, packet pointers as arguments, R6-R9 preserved across
 * calls, a global function.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct vlan_hdr {
	__be16 h_vlan_TCI;
	__be16 h_vlan_encapsulated_proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __s64);
} ports SEC(".maps");

static __noinline void count(__u32 fn)
{
	__u64 *n = bpf_map_lookup_elem(&calls, &fn);

	if (n)
		__sync_fetch_and_add(n, 1);
}

static __noinline int parse_l3(void *data, void *data_end, __u32 *l3_off)
{
	struct ethhdr *eth = data;
	struct vlan_hdr *vh;

	count(0);
	if ((void *)(eth + 1) > data_end)
		return -1;
	*l3_off = sizeof(*eth);
	if (eth->h_proto != bpf_htons(ETH_P_8021Q))
		return bpf_ntohs(eth->h_proto);
	vh = (void *)(eth + 1);
	if ((void *)(vh + 1) > data_end)
		return -1;
	*l3_off += sizeof(*vh);
	return bpf_ntohs(vh->h_vlan_encapsulated_proto);
}

static __noinline long l4_dport(void *l3, void *data_end, int ethertype, __u32 slot,
				__u32 min_port)
{
	struct udphdr *uh;
	__u8 proto;
	__s64 port;

	count(1);
	if (ethertype == ETH_P_IP) {
		struct iphdr *iph = l3;

		if ((void *)(iph + 1) > data_end)
			return -1;
		proto = iph->protocol;
		uh = l3 + iph->ihl * 4;
	} else if (ethertype == ETH_P_IPV6) {
		struct ipv6hdr *ip6h = l3;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		proto = ip6h->nexthdr;
		uh = (void *)(ip6h + 1);
	} else {
		return -1;
	}
	if (proto != IPPROTO_UDP && proto != IPPROTO_TCP)
		return -1;
	if ((void *)(uh + 1) > data_end)
		return -1;
	port = bpf_ntohs(uh->dest);
	if (port < min_port)
		return -1;
	bpf_map_update_elem(&ports, &slot, &port, BPF_ANY);
	return port;
}

__noinline int classify(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l3_off = 0;
	int ethertype;
	long port;

	count(2);
	ethertype = parse_l3(data, data_end, &l3_off);
	if (ethertype < 0)
		return XDP_DROP;
	if (l3_off > 18)
		return XDP_ABORTED;
	port = l4_dport(data + l3_off, data_end, ethertype, ethertype == ETH_P_IP ? 0 : 1, 1);
	if (port < 0)
		return XDP_PASS;
	return port < 1024 ? XDP_TX : XDP_PASS;
}

SEC("xdp")
int xdp_subprog(struct xdp_md *ctx)
{
	count(3);
	return classify(ctx);
}

char _license[] SEC("license") = "GPL";
