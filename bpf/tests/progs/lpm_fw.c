// SPDX-License-Identifier: GPL-2.0
/*
 * lpm_fw.c - an IPv4 source-address firewall on an LPM trie.
 *
 * The longest prefix matching the source address decides: its rule's
 * action is the verdict and its hit counter goes up. Addresses no rule
 * covers pass and are counted in misses[0]. Non-IPv4 frames pass
 * uncounted; truncated IPv4 headers are dropped.
 *
 * The test installs (see kernel_diff.rs):
 *   10.0.0.0/8      XDP_DROP
 *   10.1.0.0/16     XDP_PASS   (a hole in the /8: longest prefix wins)
 *   192.168.1.0/24  XDP_DROP
 *   198.51.100.7/32 XDP_TX
 *
 * Tests: LPM trie lookups with a { prefixlen, address } key, atomic adds
 * on a value returned by the lookup, BPF_F_NO_PREALLOC (required by Linux).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct lpm_v4_key {
	__u32 prefixlen;
	__u32 addr; /* network order */
};

struct rule {
	__u32 action;
	__u32 pad;
	__u64 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, struct rule);
} src_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} misses SEC(".maps");

SEC("xdp")
int xdp_lpm_fw(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct lpm_v4_key key;
	struct iphdr *iph;
	struct rule *rule;
	__u32 zero = 0;
	__u64 *miss;

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_DROP;

	key.prefixlen = 32;
	key.addr = iph->saddr;
	rule = bpf_map_lookup_elem(&src_rules, &key);
	if (rule) {
		__sync_fetch_and_add(&rule->hits, 1);
		return rule->action;
	}

	miss = bpf_map_lookup_elem(&misses, &zero);
	if (miss)
		__sync_fetch_and_add(miss, 1);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
