// SPDX-License-Identifier: GPL-2.0
/*
 * hashmap.c - a plain BPF hash map driven to its edges: inserts with
 * BPF_NOEXIST, updates with BPF_EXIST, deletes, and a full map.
 *
 * The key is the frame length; the map holds at most 8 keys. Per packet:
 *   1. bpf_map_update_elem(key, BPF_EXIST)   -ENOENT for a new length
 *   2. bpf_map_update_elem(key, BPF_NOEXIST) -EEXIST for a known length,
 *                                            -E2BIG once 8 keys are in
 *   3. a known length has its value (a count) incremented through the
 *      pointer lookup returns
 *   4. every third packet (by the running total) deletes the smallest
 *      length it has seen, or -ENOENT when that was already deleted
 * Each call's return value goes to rets[call], the number of calls that
 * returned each error to errors[-errno & 63]. Verdict XDP_PASS, XDP_DROP
 * when the map is full.
 *
 * Tests: the hash map's flags and errors, delete and reuse of elements,
 * a full preallocated map, values updated in place.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} by_len SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __s64);
} rets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} errors SEC(".maps");

/* .bss: the running total and the smallest length seen. */
__u64 total;
__u32 smallest;

static __always_inline long record(__u32 call, long ret)
{
	__s64 v = ret;
	__u32 e = (-ret) & 63;
	__u64 *n;

	bpf_map_update_elem(&rets, &call, &v, BPF_ANY);
	if (ret < 0) {
		n = bpf_map_lookup_elem(&errors, &e);
		if (n)
			*n += 1;
	}
	return ret;
}

SEC("xdp")
int xdp_hashmap(struct xdp_md *ctx)
{
	__u32 key = ctx->data_end - ctx->data;
	__u64 one = 1, *count;
	long full;

	total++;
	if (!smallest || key < smallest)
		smallest = key;

	record(0, bpf_map_update_elem(&by_len, &key, &one, BPF_EXIST));
	full = record(1, bpf_map_update_elem(&by_len, &key, &one, BPF_NOEXIST));
	if (full == -17 /* EEXIST */) {
		count = bpf_map_lookup_elem(&by_len, &key);
		if (count)
			*count += 1;
	}
	if (total % 3 == 0) {
		__u32 victim = smallest;

		record(2, bpf_map_delete_elem(&by_len, &victim));
	}
	return full == -7 /* E2BIG */ ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
