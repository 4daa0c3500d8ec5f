// SPDX-License-Identifier: GPL-2.0
/*
 * rodata_cfg.c - global variables: configuration in .rodata (`const
 * volatile`, the knobs a libbpf skeleton sets before load), a counter with
 * a non-zero initial value in .data and zero-initialised counters in .bss.
 *
 * With the default configuration the program drops IPv4 UDP to port 53
 * and passes the rest; frames shorter than min_len are dropped too.
 * Tests: loads through .rodata/.data/.bss map-value relocations
 * (LD_IMM64 BPF_PSEUDO_MAP_VALUE with offsets), stores into .data/.bss,
 * and the kernel's read-only view of .rodata (frozen after load).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* .rodata: defaults are what the test runs with. */
const volatile __u8 blocked_proto = IPPROTO_UDP;
const volatile __u16 blocked_port = 53;
const volatile __u32 min_len = 34;
const volatile __u32 default_verdict = XDP_PASS;

/* .data: starts at 1000 so a wrong initial image shows. */
__u64 seen = 1000;
__u32 last_len = 0xdeadbeef;

/* .bss */
__u64 blocked;
__u64 too_short;
__u64 total_bytes;

SEC("xdp")
int xdp_rodata_cfg(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *uh;
	__u32 len = data_end - data;

	seen++;
	last_len = len;
	total_bytes += len;
	if (len < min_len) {
		too_short++;
		return XDP_DROP;
	}
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return default_verdict;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->ihl != 5)
		return default_verdict;
	if (iph->protocol != blocked_proto)
		return default_verdict;
	uh = (void *)(iph + 1);
	if ((void *)(uh + 1) > data_end)
		return default_verdict;
	if (uh->dest == bpf_htons(blocked_port)) {
		blocked++;
		return XDP_DROP;
	}
	return default_verdict;
}

char _license[] SEC("license") = "GPL";
