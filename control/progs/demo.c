// SPDX-License-Identifier: GPL-2.0
/*
 * demo.c - the XDP program of `sluice demo`: a two-port router.
 *
 * Sluice runs it on two host-side veths whose peers live in two network
 * namespaces (10.200.1.0/24 and 10.200.2.0/24). For each IPv4 packet:
 *
 *   ARP                              XDP_PASS, to Sluice's host stack
 *   UDP to a port in blocked_udp    XDP_DROP (counted: BLOCKED)
 *   to an address in host_addrs      XDP_PASS, to Sluice's host stack (the
 *                                    gateway addresses: ping them and
 *                                    Sluice itself answers)
 *   ICMP, when icmp_to_host is set   XDP_PASS, to Sluice's host stack
 *   destination /24 in routes        MAC rewrite (the route's source and
 *                                    destination MACs), TTL - 1 with an
 *                                    incremental checksum update, then
 *                                    bpf_redirect_map(&tx_ports, route
 *                                    port): out of the other veth
 *   TTL <= 1, no route, not IPv4     XDP_DROP (counted)
 *
 * The namespaces reach their gateway MACs through permanent neighbour
 * entries that the demo installs, so no ARP is needed. icmp_to_host is a
 * load-time knob (.rodata); the demo leaves it off and forwards ICMP like
 * everything else, so ping works namespace to namespace.
 *
 * Maps: tx_ports (devmap, port slot -> ifindex), routes (hash, network ->
 * route), blocked_udp (hash, UDP destination port in host order -> 1),
 * host_addrs (hash, Sluice's own IPv4 addresses -> 1),
 * stats (per-CPU array of counters, indexed by enum stat).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

enum stat {
	FORWARDED,
	BLOCKED,
	TO_HOST,
	NO_ROUTE,
	TTL_EXCEEDED,
	NOT_IPV4,
	NSTATS,
};

struct route {
	__u32 port;		/* slot in tx_ports */
	__u8 dmac[ETH_ALEN];	/* next hop */
	__u8 smac[ETH_ALEN];	/* our port's address */
};

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);	/* destination network, /24, network order */
	__type(value, struct route);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);	/* UDP destination port, host order */
	__type(value, __u8);
} blocked_udp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);	/* an address of Sluice's own, network order */
	__type(value, __u8);
} host_addrs SEC(".maps");

const volatile __u8 icmp_to_host = 0;

static __always_inline int count(__u32 what, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &what);

	if (n)
		*n += 1;
	return verdict;
}

SEC("xdp")
int xdp_demo_router(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct route *rt;
	__u32 net, check;

	if ((void *)(eth + 1) > data_end)
		return count(NOT_IPV4, XDP_DROP);
	/* ARP is for the host stack (it resolves the namespaces' addresses). */
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return count(TO_HOST, XDP_PASS);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return count(NOT_IPV4, XDP_DROP);
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->ihl < 5)
		return count(NOT_IPV4, XDP_DROP);

	if (iph->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)iph + iph->ihl * 4;
		__u16 dport;

		if ((void *)(udp + 1) > data_end)
			return count(NOT_IPV4, XDP_DROP);
		dport = bpf_ntohs(udp->dest);
		if (bpf_map_lookup_elem(&blocked_udp, &dport))
			return count(BLOCKED, XDP_DROP);
	}
	/* Traffic for Sluice's own addresses goes to its host stack. */
	if (bpf_map_lookup_elem(&host_addrs, &iph->daddr))
		return count(TO_HOST, XDP_PASS);
	if (iph->protocol == IPPROTO_ICMP && icmp_to_host)
		return count(TO_HOST, XDP_PASS);

	net = iph->daddr & bpf_htonl(0xffffff00);
	rt = bpf_map_lookup_elem(&routes, &net);
	if (!rt)
		return count(NO_ROUTE, XDP_DROP);
	if (iph->ttl <= 1)
		return count(TTL_EXCEEDED, XDP_DROP);

	/* TTL - 1, checksum + 0x0100 (RFC 1624), as the kernel's ip_decrease_ttl. */
	check = iph->check;
	check += bpf_htons(0x0100);
	iph->check = (__u16)(check + (check >= 0xffff));
	iph->ttl--;

	__builtin_memcpy(eth->h_dest, rt->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, rt->smac, ETH_ALEN);
	count(FORWARDED, 0);
	return bpf_redirect_map(&tx_ports, rt->port, 0);
}

char _license[] SEC("license") = "GPL";
