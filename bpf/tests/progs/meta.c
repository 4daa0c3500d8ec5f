// SPDX-License-Identifier: GPL-2.0
/*
 * meta.c - bpf_xdp_adjust_meta: reserve 16 bytes of metadata in front of
 * the packet and write a small descriptor there, as programs that hand
 * hints to AF_XDP or to a TC program do.
 *
 * The metadata is { magic, length, ethertype (network order), ingress
 * ifindex, rx queue }: the last two are read from struct xdp_md (test runs
 * arrive on the loopback device, ifindex 1, queue 0). The kernel's
 * BPF_PROG_TEST_RUN returns the metadata followed by the packet as
 * data_out, so the differential test sees it.
 *
 * Frames whose first destination byte is odd (multicast) then make three
 * more requests:
 *   -6     a length that is not a multiple of 4: -EACCES, nothing changes
 *   -40    56 bytes of metadata in all: accepted by Linux, whose limit is
 *          skb_shared_info.meta_len's (a u8: 255) since 6.x; old kernels,
 *          and the AF_XDP documentation of their time, said 32
 *   -256   would reach into the 40 bytes Linux keeps for struct xdp_frame
 *          at the start of the buffer: -EINVAL
 * The zeroed headroom the 40 bytes come from shows in data_out.
 *
 * Tests: adjust_meta, the data_meta <= data bounds check, writes into the
 * metadata area, the helper's limits and error codes, the context's
 * ingress_ifindex and rx_queue_index fields.
 * Map: results[0..3] = the last return of each call.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct meta {
	__u32 magic;
	__u16 len;
	__be16 ethertype;
	__u32 ifindex;
	__u32 rx_queue;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __s64);
} results SEC(".maps");

static __always_inline void record(__u32 key, long ret)
{
	__s64 v = ret;

	bpf_map_update_elem(&results, &key, &v, BPF_ANY);
}

SEC("xdp")
int xdp_meta(struct xdp_md *ctx)
{
	void *data, *data_end, *data_meta;
	struct ethhdr *eth;
	struct meta *m;
	long ret;

	ret = bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct meta));
	record(0, ret);
	if (ret)
		return XDP_ABORTED;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	data_meta = (void *)(long)ctx->data_meta;
	m = data_meta;
	if ((void *)(m + 1) > data)
		return XDP_ABORTED;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;

	m->magic = 0x5115ce00;
	m->len = data_end - data;
	m->ethertype = eth->h_proto;
	m->ifindex = ctx->ingress_ifindex;
	m->rx_queue = ctx->rx_queue_index;

	if (eth->h_dest[0] & 1) {
		record(1, bpf_xdp_adjust_meta(ctx, -6));
		record(2, bpf_xdp_adjust_meta(ctx, -40));
		record(3, bpf_xdp_adjust_meta(ctx, -256));
	}
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
