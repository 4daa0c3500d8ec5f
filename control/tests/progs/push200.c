// SPDX-License-Identifier: GPL-2.0
/*
 * push200.c - pushes a 200-byte header in front of every frame with
 * bpf_xdp_adjust_head(ctx, -200) (byte i of it is i ^ 0x5a) and sends the
 * frame back out (XDP_TX). 200 bytes is more than DPDK's 128 of mbuf
 * headroom: control/tests/run_dpdk.rs checks that DPDK ports send such
 * frames intact.
 *
 * Rebuild: clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu \
 *          -c push200.c -o push200.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define PUSH 200

SEC("xdp")
int xdp_push200(struct xdp_md *ctx)
{
	unsigned char *data, *data_end;

	if (bpf_xdp_adjust_head(ctx, -PUSH))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + PUSH > data_end)
		return XDP_ABORTED;
#pragma unroll
	for (int i = 0; i < PUSH; i++)
		data[i] = i ^ 0x5a;
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
