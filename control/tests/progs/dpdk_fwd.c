// SPDX-License-Identifier: GPL-2.0
/*
 * dpdk_fwd.c - forwards every frame out of the other port of a pair
 * (ingress_ifindex ^ 1: `sluice run` numbers ports without a kernel
 * interface 1000, 1001, ... in the order given). Used by
 * control/tests/run_dpdk.rs.
 *
 * Rebuild: clang -O2 -g -target bpf -I/usr/include/$(uname -m)-linux-gnu \
 *          -c dpdk_fwd.c -o dpdk_fwd.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_fwd_pair(struct xdp_md *ctx)
{
	return bpf_redirect(ctx->ingress_ifindex ^ 1, 0);
}

char _license[] SEC("license") = "GPL";
