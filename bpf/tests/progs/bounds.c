// SPDX-License-Identifier: GPL-2.0
/*
 * bounds.c - the exact limits of bpf_xdp_adjust_head, _tail and _meta, one
 * byte on each side, and how metadata travels with the head.
 *
 * The BPF_PROG_TEST_RUN frame: 4096 bytes, data at 256, struct xdp_frame
 * reserved in the first 40 bytes, skb_shared_info in the last 320. So:
 *   head  may move down to byte 40 (+ metadata length), and up while at
 *         least 14 bytes (ETH_HLEN) remain
 *   tail  may grow to byte 3776 and shrink while 14 bytes remain
 *   meta  may grow down to byte 40, in multiples of 4
 * Each probe's return value goes to rets[step]; the probes that succeed are
 * undone, so the frame comes back as it came in, except:
 *   - an 8-byte metadata area (0xa1..0xa8) is created and then the head is
 *     moved down 20 bytes: Linux moves the metadata with it (memmove, the
 *     old copy stays behind), which data_out shows;
 *   - frames longer than 100 bytes are finally cut to 14 bytes.
 * Verdict XDP_PASS, or XDP_ABORTED when a probe that must succeed fails.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define HEADROOM 256
#define FRAME_RESERVE 40 /* sizeof(struct xdp_frame) */
#define FRAME_END (4096 - 320)
#define ETH_HLEN 14
#define STEPS 20

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STEPS);
	__type(key, __u32);
	__type(value, __s64);
} rets SEC(".maps");

static __always_inline void record(__u32 step, long ret)
{
	__s64 v = ret;

	bpf_map_update_elem(&rets, &step, &v, BPF_ANY);
}

/* Makes a probe, records it; returns whether it succeeded. */
#define PROBE(step, call) ({ long __r = (call); record(step, __r); __r == 0; })

SEC("xdp")
int xdp_bounds(struct xdp_md *ctx)
{
	int len = ctx->data_end - ctx->data;
	int down = HEADROOM - FRAME_RESERVE;
	int room = FRAME_END - HEADROOM - len;
	void *data, *meta;
	__u8 *m;

	/* Head: one byte past the reserve fails, exactly to it works. */
	PROBE(0, bpf_xdp_adjust_head(ctx, -down - 1));
	if (!PROBE(1, bpf_xdp_adjust_head(ctx, -down)))
		return XDP_ABORTED;
	/* No room left for metadata below the moved head. */
	PROBE(2, bpf_xdp_adjust_meta(ctx, -4));
	if (!PROBE(3, bpf_xdp_adjust_head(ctx, down)))
		return XDP_ABORTED;

	/* Head forward: 14 bytes must remain. */
	PROBE(4, bpf_xdp_adjust_head(ctx, len - ETH_HLEN + 1));
	if (!PROBE(5, bpf_xdp_adjust_head(ctx, len - ETH_HLEN)))
		return XDP_ABORTED;
	if (!PROBE(6, bpf_xdp_adjust_head(ctx, -(len - ETH_HLEN))))
		return XDP_ABORTED;

	/* Tail: grow to the end of the frame and not a byte more. */
	PROBE(7, bpf_xdp_adjust_tail(ctx, room + 1));
	if (!PROBE(8, bpf_xdp_adjust_tail(ctx, room)))
		return XDP_ABORTED;
	if (!PROBE(9, bpf_xdp_adjust_tail(ctx, -room)))
		return XDP_ABORTED;

	/* Meta: the whole headroom down to the reserve, then none again. */
	PROBE(10, bpf_xdp_adjust_meta(ctx, -down - 4));
	if (!PROBE(11, bpf_xdp_adjust_meta(ctx, -down)))
		return XDP_ABORTED;
	/* The head cannot pass below the metadata. */
	PROBE(12, bpf_xdp_adjust_head(ctx, -4));
	/* meta above data is refused. */
	PROBE(13, bpf_xdp_adjust_meta(ctx, down + 4));
	if (!PROBE(14, bpf_xdp_adjust_meta(ctx, down)))
		return XDP_ABORTED;

	/* 8 bytes of metadata, then the head moves down 20 bytes. */
	if (!PROBE(15, bpf_xdp_adjust_meta(ctx, -8)))
		return XDP_ABORTED;
	meta = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	m = meta;
	if ((void *)(m + 8) > data)
		return XDP_ABORTED;
	m[0] = 0xa1; m[1] = 0xa2; m[2] = 0xa3; m[3] = 0xa4;
	m[4] = 0xa5; m[5] = 0xa6; m[6] = 0xa7; m[7] = 0xa8;
	if (!PROBE(16, bpf_xdp_adjust_head(ctx, -20)))
		return XDP_ABORTED;
	/* Where the metadata is now: 8 bytes below the new data. */
	meta = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	record(17, data - meta);

	if (len > 100) {
		/* 20 bytes of headroom are now part of the packet. */
		PROBE(18, bpf_xdp_adjust_tail(ctx, -(len + 20 - ETH_HLEN) - 1));
		PROBE(19, bpf_xdp_adjust_tail(ctx, -(len + 20 - ETH_HLEN)));
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
