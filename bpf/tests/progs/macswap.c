// SPDX-License-Identifier: GPL-2.0
/*
 * macswap.c - the classic reflector: swap the Ethernet source and
 * destination addresses and send the frame back out (XDP_TX).
 *
 * Tests: in-place packet writes, __builtin_memcpy of 6-byte fields (clang
 * lowers it to narrow loads and stores), the minimum-length check.
 * Frames shorter than an Ethernet header are dropped.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_macswap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;

	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
