// SPDX-License-Identifier: GPL-2.0
/* drop.c - benches/afxdp.sh: count the packet (per-CPU), drop it. The
 * same object runs in the kernel (ip link set dev X xdpdrv obj drop.o)
 * and in Sluice (sluice run --prog drop.o). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("xdp")
int xdp_bench_drop(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *n = bpf_map_lookup_elem(&counters, &k);

	if (n)
		*n += 1;
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
