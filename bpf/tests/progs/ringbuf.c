// SPDX-License-Identifier: GPL-2.0
/*
 * ringbuf.c - events to user space through a BPF ring buffer.
 *
 * IPv4 frames: bpf_ringbuf_reserve a struct event, fill it in place (length,
 * ethertype, the first 16 bytes) and bpf_ringbuf_submit it.
 * Other frames: build the event on the stack and bpf_ringbuf_output it.
 * Frames whose destination MAC is broadcast reserve an event and discard
 * it (bpf_ringbuf_discard), which must leave no visible record.
 * Every frame passes.
 *
 * Tests: the reserve/submit/discard protocol (the verifier's reference
 * tracking), bpf_ringbuf_output's copy, failure accounting. Map:
 * counts[0] = submitted, [1] = output ok, [2] = discarded, [3] = failures.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct event {
	__u32 len;
	__u16 ethertype; /* host order */
	__u16 kind;      /* 1 reserved, 2 output */
	__u8 head[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline void bump(__u32 key)
{
	__u64 *n = bpf_map_lookup_elem(&counts, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("xdp")
int xdp_ringbuf(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct event *e, local;

	if (data + sizeof(e->head) > data_end)
		return XDP_PASS;

	if (eth->h_dest[0] == 0xff && eth->h_dest[5] == 0xff) {
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e) {
			bump(3);
			return XDP_PASS;
		}
		bpf_ringbuf_discard(e, 0);
		bump(2);
		return XDP_PASS;
	}

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e) {
			bump(3);
			return XDP_PASS;
		}
		e->len = data_end - data;
		e->ethertype = bpf_ntohs(eth->h_proto);
		e->kind = 1;
		__builtin_memcpy(e->head, data, sizeof(e->head));
		bpf_ringbuf_submit(e, 0);
		bump(0);
		return XDP_PASS;
	}

	local.len = data_end - data;
	local.ethertype = bpf_ntohs(eth->h_proto);
	local.kind = 2;
	__builtin_memcpy(local.head, data, sizeof(local.head));
	if (bpf_ringbuf_output(&events, &local, sizeof(local), 0) == 0)
		bump(1);
	else
		bump(3);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
