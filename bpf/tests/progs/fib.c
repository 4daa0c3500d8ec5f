// SPDX-License-Identifier: GPL-2.0
/*
 * fib.c - bpf_fib_lookup with inputs taken from the packet.
 *
 * After the Ethernet header the packet carries a request:
 *
 *   u32 flags | u32 rc (out) | struct bpf_fib_lookup params (in/out)
 *
 * xdp_fib copies params to the stack (the helper takes no packet
 * pointers), fills ifindex from ingress_ifindex when it is 0, calls
 * bpf_fib_lookup(ctx, &params, sizeof(params), flags), and writes the
 * return value and the whole struct back into the packet: the test compares
 * the frames byte for byte. xdp_fib_short passes a plen one byte short
 * (-EINVAL). Packets too short for a request are dropped.
 *
 * Tests: bpf_fib_lookup's return codes and every output field against the
 * kernel's FIB of a test network namespace (dataplane/tests/fib_kernel.rs).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct request {
	__u32 flags;
	__u32 rc;
	struct bpf_fib_lookup params;
};

static __always_inline int lookup(struct xdp_md *ctx, int short_plen)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct request *r = data + 14;
	struct bpf_fib_lookup p;
	long rc;

	if ((void *)(r + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(&p, &r->params, sizeof(p));
	if (!p.ifindex)
		p.ifindex = ctx->ingress_ifindex;
	if (short_plen)
		rc = bpf_fib_lookup(ctx, &p, sizeof(p) - 1, r->flags);
	else
		rc = bpf_fib_lookup(ctx, &p, sizeof(p), r->flags);
	r->rc = (__u32)rc;
	__builtin_memcpy(&r->params, &p, sizeof(p));
	return XDP_PASS;
}

SEC("xdp")
int xdp_fib(struct xdp_md *ctx)
{
	return lookup(ctx, 0);
}

SEC("xdp")
int xdp_fib_short(struct xdp_md *ctx)
{
	return lookup(ctx, 1);
}

char _license[] SEC("license") = "GPL";
