// SPDX-License-Identifier: GPL-2.0
/*
 * loop.c - a bounded loop over packet bytes (Linux >= 5.3 verifies these
 * without unrolling): the 16-bit one's-complement sum of the first up to
 * 64 bytes, as a checksum over a prefix would be computed.
 *
 * The sum is stored in sums[0] and the byte count in sums[1]; the verdict
 * is XDP_PASS for an even sum and XDP_DROP for an odd one, so the result is
 * visible in the verdict too. A second loop with a data-dependent trip
 * count (the first byte % 16 iterations) xors bytes into sums[2].
 *
 * Tests: back-edges the verifier must bound, a packet bounds check inside
 * the loop, 16-bit loads at odd offsets, loop-carried registers.
 * `#pragma clang loop unroll(disable)` keeps clang from unrolling.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_BYTES 64

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} sums SEC(".maps");

static __always_inline void store(__u32 key, __u64 v)
{
	bpf_map_update_elem(&sums, &key, &v, BPF_ANY);
}

SEC("xdp")
int xdp_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 sum = 0, i, n = 0;
	__u8 x = 0, rounds;

#pragma clang loop unroll(disable)
	for (i = 0; i < MAX_BYTES; i += 2) {
		__u8 *p = data + i;

		if ((void *)(p + 2) > data_end)
			break;
		sum += *(__u16 *)p;
		n += 2;
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	store(0, sum);
	store(1, n);

	if (data + 1 > data_end)
		return XDP_DROP;
	rounds = *(__u8 *)data % 16;
#pragma clang loop unroll(disable)
	for (i = 0; i < rounds; i++) {
		__u8 *p = data + 1 + i;

		if ((void *)(p + 1) > data_end)
			break;
		x ^= *p;
	}
	store(2, x);

	return (sum & 1) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
