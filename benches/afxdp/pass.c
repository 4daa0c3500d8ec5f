// SPDX-License-Identifier: GPL-2.0
/* pass.c - benches/afxdp.sh: XDP_PASS, so that the AF_PACKET case gets
 * the generator's frames (a veth takes XDP frames only when its peer runs
 * an XDP program or GRO) and they go up the stack to the packet socket. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
