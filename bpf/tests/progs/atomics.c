// SPDX-License-Identifier: GPL-2.0
// CFLAGS: -mcpu=v3
/*
 * atomics.c - every BPF atomic operation on a map value, compiled for
 * -mcpu=v3 (as many projects build), so the program also uses 32-bit ALU
 * operations and 32-bit conditional jumps (BPF_JMP32).
 *
 * Per packet, on the state in slots[0]:
 *   add, and, or, xor with and without fetch, 64- and 32-bit;
 *   xchg (__sync_lock_test_and_set);
 *   cmpxchg (__sync_val_compare_and_swap) that succeeds when the packet
 *   length is even and fails when it is odd.
 * The fetched (old) values are folded into `trace`, so a wrong fetch shows
 * even when the final state is right. Verdict: XDP_PASS, or XDP_DROP when
 * the 32-bit fetch_add saw an odd value (a JMP32 test on the result).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct state {
	__u64 add64, and64, or64, xor64, xchg64, cmpxchg64, trace;
	__u32 add32, and32, or32, xor32, xchg32, cmpxchg32;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct state);
} slots SEC(".maps");

SEC("xdp")
int xdp_atomics(struct xdp_md *ctx)
{
	__u32 len = ctx->data_end - ctx->data;
	__u64 v = ((__u64)len << 32) | (len * 0x9e3779b1u);
	__u32 zero = 0, old32;
	struct state *s;
	__u64 t;

	s = bpf_map_lookup_elem(&slots, &zero);
	if (!s)
		return XDP_ABORTED;

	/* Without fetch (BPF_ADD/AND/OR/XOR). */
	__sync_fetch_and_add(&s->add64, v);
	__sync_fetch_and_or(&s->or64, v);
	__sync_fetch_and_and(&s->and64, ~v);
	__sync_fetch_and_xor(&s->xor64, v);

	/* With fetch: the old values feed the trace. */
	t = __sync_fetch_and_add(&s->add64, 1);
	t ^= __sync_fetch_and_or(&s->or64, len) << 1;
	t ^= __sync_fetch_and_and(&s->and64, v | 1) << 2;
	t ^= __sync_fetch_and_xor(&s->xor64, len) << 3;
	t ^= __sync_lock_test_and_set(&s->xchg64, v) << 4;
	t ^= __sync_val_compare_and_swap(&s->cmpxchg64, (len & 1) ? ~0ull : s->cmpxchg64,
					 s->cmpxchg64 + len) << 5;

	old32 = __sync_fetch_and_add(&s->add32, len);
	t ^= old32;
	t ^= (__u64)__sync_fetch_and_or(&s->or32, len) << 6;
	t ^= (__u64)__sync_fetch_and_and(&s->and32, ~len) << 7;
	t ^= (__u64)__sync_fetch_and_xor(&s->xor32, len) << 8;
	t ^= (__u64)__sync_lock_test_and_set(&s->xchg32, len) << 9;
	t ^= (__u64)__sync_val_compare_and_swap(&s->cmpxchg32, (len & 1) ? 0xffffffffu : s->cmpxchg32,
						 s->cmpxchg32 + 1) << 10;

	__sync_fetch_and_xor(&s->trace, t);
	return (old32 & 1) ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
