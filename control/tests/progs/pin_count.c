// SPDX-License-Identifier: GPL-2.0
/*
 * pin_count.c - a counter that survives program replacement.
 *
 * Counts every packet in `pkt_count[0]`, an array declared with
 * `pinning = LIBBPF_PIN_BY_NAME`, and drops it. Replacing the program with
 * a new load of this object must keep the count: the daemon hands the
 * pinned map to the new version. Used by control/tests/daemon.rs.
 *
 * Rebuild: clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu \
 *          -c pin_count.c -o pin_count.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pkt_count SEC(".maps");

SEC("xdp")
int xdp_pin_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&pkt_count, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
