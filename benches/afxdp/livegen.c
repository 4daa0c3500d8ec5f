// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * livegen.c - benches/afxdp.sh's packet generator: BPF_PROG_TEST_RUN in
 * live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux >= 5.18), the
 * technique of xdp-tools' xdp-trafficgen, in 100 lines.
 *
 * A two-instruction XDP program (r0 = XDP_TX; exit) is run by the kernel
 * on a 60-byte frame "received" on IFACE; in live mode the kernel really
 * transmits what the program returns XDP_TX for, out of IFACE, in batches
 * of 64, with page-pool buffers and no socket, skb or qdisc. On a veth the
 * frames arrive at the peer, which needs an XDP program (or GRO) to take
 * them: every receiver in the benchmark has one.
 *
 * Usage: livegen IFACE DST_MAC SRC_MAC SECONDS
 * Prints "livegen sent N in S s: R Mpps" at the end.
 */
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int mac(const char *s, unsigned char *out)
{
	return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &out[0], &out[1], &out[2], &out[3],
		      &out[4], &out[5]) == 6 ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = XDP_TX },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	unsigned char frame[60];
	struct xdp_md ctx = { 0 };
	unsigned long long sent = 0;
	double start, end;
	int fd, ifindex;

	if (argc != 5) {
		fprintf(stderr, "usage: %s IFACE DST_MAC SRC_MAC SECONDS\n", argv[0]);
		return 2;
	}
	ifindex = if_nametoindex(argv[1]);
	memset(frame, 0x41, sizeof(frame));
	if (!ifindex || mac(argv[2], frame) || mac(argv[3], frame + 6)) {
		fprintf(stderr, "livegen: bad interface or MAC\n");
		return 2;
	}
	frame[12] = 0x88;
	frame[13] = 0xb5;
	fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "livegen", "GPL", insns, 2, NULL);
	if (fd < 0) {
		perror("livegen: BPF_PROG_LOAD");
		return 1;
	}
	ctx.ingress_ifindex = ifindex;
	ctx.data_end = sizeof(frame); /* the kernel wants the frame's extent */
	start = now();
	end = start + atof(argv[4]);
	while (now() < end) {
		LIBBPF_OPTS(bpf_test_run_opts, opts,
			    .data_in = frame,
			    .data_size_in = sizeof(frame),
			    .ctx_in = &ctx,
			    .ctx_size_in = sizeof(ctx),
			    .repeat = 1 << 18,
			    .flags = BPF_F_TEST_XDP_LIVE_FRAMES,
			    .batch_size = 64);

		if (bpf_prog_test_run_opts(fd, &opts)) {
			perror("livegen: BPF_PROG_TEST_RUN");
			return 1;
		}
		sent += 1 << 18;
	}
	printf("livegen sent %llu in %.1f s: %.3f Mpps\n", sent, now() - start,
	       sent / (now() - start) / 1e6);
	return 0;
}
