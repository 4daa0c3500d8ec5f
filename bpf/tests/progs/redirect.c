// SPDX-License-Identifier: GPL-2.0
/*
 * redirect.c - forwarding with bpf_redirect_map (devmap) and bpf_redirect.
 *
 *   IPv4   bpf_redirect_map(&tx_ports, last byte of daddr % 8, XDP_PASS):
 *          XDP_REDIRECT when the slot holds a port, else the fallback
 *          action in the flags' low bits (XDP_PASS)
 *   IPv6   bpf_redirect(1, 0): XDP_REDIRECT
 *   ARP    bpf_redirect(1, 1): invalid flags, XDP_ABORTED
 *   other  bpf_redirect_map(&tx_ports, 7, 0): slot 7 is never filled, so
 *          the fallback is 0 (XDP_ABORTED)
 *
 * The test fills tx_ports[0..3] with ifindex 1 (lo, which every network
 * namespace has). BPF_PROG_TEST_RUN does not perform the redirect; only the
 * helper's return value (the verdict) is compared.
 *
 * Tests: devmap lookups inside the helper, the flags fallback, bpf_redirect
 * flag validation. Map: verdicts[verdict] counts verdicts.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} verdicts SEC(".maps");

static __always_inline int count(int verdict)
{
	__u32 key = verdict;
	__u64 *n = bpf_map_lookup_elem(&verdicts, &key);

	if (n)
		*n += 1;
	return verdict;
}

SEC("xdp")
int xdp_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return count(XDP_DROP);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return count(XDP_DROP);
		return count(bpf_redirect_map(&tx_ports, bpf_ntohl(iph->daddr) & 7, XDP_PASS));
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return count(bpf_redirect(1, 0));
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return count(bpf_redirect(1, 1));
	return count(bpf_redirect_map(&tx_ports, 7, 0));
}

char _license[] SEC("license") = "GPL";
