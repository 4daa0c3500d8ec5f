// SPDX-License-Identifier: GPL-2.0
/*
 * trim.c - bpf_xdp_adjust_tail: a packet sampler that cuts long frames to
 * 128 bytes and pads runts up to the 60-byte Ethernet minimum.
 *
 *   longer than 128 bytes   shrink to 128 (adjust_tail(128 - len)), XDP_TX
 *   shorter than 60 bytes   grow to 60 and stamp 0xee in the last byte,
 *                           XDP_TX (the kernel zeroes the grown bytes)
 *   60..128 bytes           two calls that must fail: shrink below the
 *                           Ethernet header, and grow past the frame's
 *                           tailroom; XDP_PASS
 *
 * Tests: adjust_tail both ways, the grown area's contents, re-deriving
 * data_end after the call, and the helper's -EINVAL cases.
 * Map: results[case] = the helper's last return value (as __s64).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#define SNAP_LEN 128
#define MIN_LEN 60

enum { RES_SHRINK, RES_GROW, RES_BAD_SHRINK, RES_BAD_GROW, RES_MAX };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RES_MAX);
	__type(key, __u32);
	__type(value, __s64);
} results SEC(".maps");

static __always_inline void record(__u32 key, long ret)
{
	__s64 v = ret;

	bpf_map_update_elem(&results, &key, &v, BPF_ANY);
}

SEC("xdp")
int xdp_trim(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int len = data_end - data;
	long ret;

	if (len > SNAP_LEN) {
		ret = bpf_xdp_adjust_tail(ctx, SNAP_LEN - len);
		record(RES_SHRINK, ret);
		return ret ? XDP_ABORTED : XDP_TX;
	}

	if (len < MIN_LEN) {
		__u8 *last;

		ret = bpf_xdp_adjust_tail(ctx, MIN_LEN - len);
		record(RES_GROW, ret);
		if (ret)
			return XDP_ABORTED;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		last = data + MIN_LEN - 1;
		if ((void *)(last + 1) > data_end)
			return XDP_DROP;
		*last = 0xee;
		return XDP_TX;
	}

	/* Leaving less than an Ethernet header is refused. */
	ret = bpf_xdp_adjust_tail(ctx, -len + 4);
	record(RES_BAD_SHRINK, ret);
	/* The test_run frame has 4096 - 256 - 320 bytes for data. */
	ret = bpf_xdp_adjust_tail(ctx, 4000);
	record(RES_BAD_GROW, ret);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
