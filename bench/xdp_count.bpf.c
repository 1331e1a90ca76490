// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Counts the benchmark's UDP packets (destination port BENCH_UDP_PORT,
 * plain or inside IP-in-IP; if count_config has a daddr, only those to it,
 * the VIP, so that the daemon's health probes sent straight to a backend
 * are not taken for balanced traffic) and notes when the first one arrived
 * (bpf_ktime_get_ns: CLOCK_MONOTONIC). Packets to that port, counted or
 * not, are dropped (backends: a sink that never answers, so UDP health
 * checks pass, as with a real service) or passed (a switch port: it must
 * still forward them), as count_config says; everything else passes.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "bench.h"

struct count {
	__u64 packets;
	__u64 first_ns; /* 0 until the first counted packet */
};

struct count_config {
	__u32 pass;   /* 0: drop counted packets, 1: pass them */
	__be32 daddr; /* 0: any destination; else only packets (inner, if tunnelled) to it */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct count);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct count_config);
} count_config SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	const struct count_config *cfg;
	struct udphdr *udp;
	struct count *c;
	__u32 key = 0;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return XDP_PASS;
	if (ip->protocol == IPPROTO_IPIP) {
		ip = ip + 1;
		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return XDP_PASS;
	}
	udp = (void *)(ip + 1);
	if (ip->protocol != IPPROTO_UDP || (void *)(udp + 1) > data_end ||
	    udp->dest != bpf_htons(BENCH_UDP_PORT))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&count_config, &key);
	c = cfg && cfg->daddr && ip->daddr != cfg->daddr ? NULL : bpf_map_lookup_elem(&counts, &key);
	if (c) {
		if (!c->first_ns)
			c->first_ns = bpf_ktime_get_ns();
		c->packets += 1;
	}
	return cfg && cfg->pass ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
