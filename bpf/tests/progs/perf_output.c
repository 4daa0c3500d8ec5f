// SPDX-License-Identifier: GPL-2.0
/*
 * perf_output.c - samples to user space through a perf event array.
 *
 * Every frame: bpf_perf_event_output of a struct meta followed by the
 * first min(len, 64) packet bytes (BPF_F_CTXLEN_MASK) into the running
 * CPU's slot (BPF_F_CURRENT_CPU). Then one call per error the helper
 * has, each return code kept in rets[]:
 *   rets[0] the sample above (0),
 *   rets[1] a flag bit outside index and length (-EINVAL),
 *   rets[2] more packet bytes than the frame has (-EFAULT),
 *   rets[3] an index past max_entries (-E2BIG),
 *   rets[4] slot 3, which nobody opens (-ENOENT),
 *   rets[5] slot 0 explicitly, with no packet bytes (0 on CPU 0).
 * Every frame passes.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct meta {
	__u32 magic;
	__u16 pkt_len;
	__u16 sampled;
	__u32 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 4);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 6);
	__type(key, __u32);
	__type(value, __s64);
} rets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} seq SEC(".maps");

static __always_inline void keep(__u32 key, long r)
{
	__s64 *v = bpf_map_lookup_elem(&rets, &key);

	if (v)
		*v = r;
}

SEC("xdp")
int xdp_perf_output(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	__u64 sampled = len < 64 ? len : 64;
	struct meta m = {};
	__u32 zero = 0;
	__u32 *n = bpf_map_lookup_elem(&seq, &zero);

	if (!n)
		return XDP_ABORTED;
	m.magic = 0x5151ce;
	m.pkt_len = len;
	m.sampled = sampled;
	m.seq = (*n)++;

	keep(0, bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU | sampled << 32,
				      &m, sizeof(m)));
	keep(1, bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU | 1ULL << 52,
				      &m, sizeof(m)));
	keep(2, bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU | (len + 1) << 32,
				      &m, sizeof(m)));
	keep(3, bpf_perf_event_output(ctx, &events, 4, &m, sizeof(m)));
	keep(4, bpf_perf_event_output(ctx, &events, 3, &m, sizeof(m)));
	keep(5, bpf_perf_event_output(ctx, &events, 0, &m, 2));
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
