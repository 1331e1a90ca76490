// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_decap: runs on backends. Strips the outer header of IP-in-IP packets
 * addressed to this host and passes the inner packet (client -> VIP) up the
 * stack, which answers the client directly. Hosts without a kernel IPIP
 * driver need it; hosts with one save the tunnel device's cost.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/parse.h"

/* This host's addresses that terminate tunnels, written at attach time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __be32);
	__type(value, __u8);
} decap_addrs_v4 SEC(".maps");

/* Packets and bytes (inner length) decapsulated. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct traffic_counters);
} decap_stats SEC(".maps");

static __always_inline int decap_ipip(struct xdp_md *ctx, struct ethhdr *eth, void *data_end)
{
	struct iphdr *outer = (void *)(eth + 1);
	struct iphdr *inner = outer + 1;
	struct traffic_counters *stats;
	struct ethhdr *moved;
	__u32 zero = 0;

	if ((void *)(inner + 1) > data_end)
		return XDP_PASS;
	if (outer->protocol != IPPROTO_IPIP || outer->ihl != 5 || outer->version != 4)
		return XDP_PASS;
	if (outer->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET_MASK))
		return XDP_PASS;
	if (inner->version != 4)
		return XDP_PASS;
	if (!bpf_map_lookup_elem(&decap_addrs_v4, &outer->daddr))
		return XDP_PASS;

	/* The Ethernet header moves forward over the outer IP header. */
	moved = (void *)eth + sizeof(struct iphdr);
	__builtin_memcpy(moved->h_source, eth->h_source, ETH_ALEN);
	__builtin_memcpy(moved->h_dest, eth->h_dest, ETH_ALEN);
	moved->h_proto = bpf_htons(ETH_P_IP);

	stats = bpf_map_lookup_elem(&decap_stats, &zero);
	if (stats) {
		stats->packets += 1;
		stats->bytes += bpf_ntohs(inner->tot_len);
	}

	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct iphdr)))
		return XDP_DROP;
	return XDP_PASS;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth;

	if (parse_eth(data, data_end, &eth) != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	return decap_ipip(ctx, eth, data_end);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
