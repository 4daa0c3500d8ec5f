// SPDX-License-Identifier: GPL-2.0
/* macswap.c - benches/afxdp.sh: count the packet (per-CPU), swap the
 * Ethernet addresses, send it back out (XDP_TX). The same object runs in
 * the kernel and in Sluice. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("xdp")
int xdp_bench_macswap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];
	__u32 k = 0;
	__u64 *n;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	n = bpf_map_lookup_elem(&counters, &k);
	if (n)
		*n += 1;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
