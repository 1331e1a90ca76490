// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_decap: runs on backends. Strips the outer header of IP-in-IP packets
 * (4-in-4, 6-in-6, 4-in-6, 6-in-4) addressed to this host and passes the
 * inner packet (client -> VIP) up the stack, which answers the client
 * directly. Hosts without a kernel tunnel driver need it; hosts with one
 * save the tunnel device's cost. Anything else passes untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/csum.h"
#include "lib/parse.h"

/* This host's addresses that terminate tunnels, written at attach time. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __be32);
	__type(value, __u8);
} decap_addrs_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct in6_addr);
	__type(value, __u8);
} decap_addrs_v6 SEC(".maps");

/* Packets and bytes (inner length) decapsulated. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct traffic_counters);
} decap_stats SEC(".maps");

/* What follows the outer header, if it is a whole IP packet of that family. */
static __always_inline __u16 inner_length(void *inner, void *data_end, __u8 proto)
{
	if (proto == IPPROTO_IPIP) {
		struct iphdr *ip = inner;

		if ((void *)(ip + 1) > data_end || ip->version != 4)
			return 0;
		return bpf_ntohs(ip->tot_len);
	}
	if (proto == IPPROTO_IPV6) {
		struct ipv6hdr *ip6 = inner;

		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return 0;
		return sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	}
	return 0;
}

/*
 * Moves the L2 header (and a VLAN tag) forward over the outer IP header,
 * sets the inner EtherType and drops the outer header.
 */
static __always_inline int strip_outer(struct xdp_md *ctx, struct packet *pkt, int outer_len, __u8 proto, void *data_end)
{
	__be16 inner_type = proto == IPPROTO_IPV6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	struct ethhdr *eth = pkt->eth;
	struct ethhdr *moved = (void *)eth + outer_len;

	if (pkt->l2_len == sizeof(*eth)) {
		if ((void *)(moved + 1) > data_end)
			return -1;
		__builtin_memcpy(moved->h_source, eth->h_source, ETH_ALEN);
		__builtin_memcpy(moved->h_dest, eth->h_dest, ETH_ALEN);
		moved->h_proto = inner_type;
	} else {
		struct vlan_tag *tag = (void *)(eth + 1);
		struct vlan_tag *moved_tag = (void *)(moved + 1);

		if ((void *)(moved_tag + 1) > data_end || (void *)(tag + 1) > data_end)
			return -1;
		moved_tag->proto = inner_type;
		moved_tag->tci = tag->tci;
		moved->h_proto = eth->h_proto;
		__builtin_memcpy(moved->h_source, eth->h_source, ETH_ALEN);
		__builtin_memcpy(moved->h_dest, eth->h_dest, ETH_ALEN);
	}
	return bpf_xdp_adjust_head(ctx, outer_len);
}

static __always_inline void count_decap(__u16 inner_len)
{
	__u32 zero = 0;
	struct traffic_counters *stats = bpf_map_lookup_elem(&decap_stats, &zero);

	if (stats) {
		stats->packets += 1;
		stats->bytes += inner_len;
	}
}

static __always_inline int decap_v4(struct xdp_md *ctx, struct packet *pkt, void *data_end)
{
	struct iphdr *outer = (void *)pkt->eth + pkt->l2_len;
	__u16 inner_len;

	if ((void *)(outer + 1) > data_end || outer->version != 4 || outer->ihl != 5)
		return XDP_PASS;
	/* The whole outer packet in the frame, and its header intact. */
	if ((void *)outer + bpf_ntohs(outer->tot_len) > data_end || !ipv4_short_header_valid(outer))
		return XDP_PASS;
	if (outer->protocol != IPPROTO_IPIP && outer->protocol != IPPROTO_IPV6)
		return XDP_PASS;
	if (outer->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET_MASK))
		return XDP_PASS;
	if (!bpf_map_lookup_elem(&decap_addrs_v4, &outer->daddr))
		return XDP_PASS;
	inner_len = inner_length(outer + 1, data_end, outer->protocol);
	if (!inner_len || inner_len + sizeof(*outer) > bpf_ntohs(outer->tot_len))
		return XDP_PASS;
	if (strip_outer(ctx, pkt, sizeof(*outer), outer->protocol, data_end))
		return XDP_DROP;
	count_decap(inner_len);
	return XDP_PASS;
}

static __always_inline int decap_v6(struct xdp_md *ctx, struct packet *pkt, void *data_end)
{
	struct ipv6hdr *outer = (void *)pkt->eth + pkt->l2_len;
	__u16 inner_len;

	if ((void *)(outer + 1) > data_end || outer->version != 6)
		return XDP_PASS;
	if ((void *)(outer + 1) + bpf_ntohs(outer->payload_len) > data_end)
		return XDP_PASS;
	if (outer->nexthdr != IPPROTO_IPIP && outer->nexthdr != IPPROTO_IPV6)
		return XDP_PASS;
	if (!bpf_map_lookup_elem(&decap_addrs_v6, &outer->daddr))
		return XDP_PASS;
	inner_len = inner_length(outer + 1, data_end, outer->nexthdr);
	if (!inner_len || inner_len > bpf_ntohs(outer->payload_len))
		return XDP_PASS;
	if (strip_outer(ctx, pkt, sizeof(*outer), outer->nexthdr, data_end))
		return XDP_DROP;
	count_decap(inner_len);
	return XDP_PASS;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	enum lb_reason reason;

	switch (parse_l2(data, data_end, &pkt, &reason)) {
	case bpf_htons(ETH_P_IP):
		return decap_v4(ctx, &pkt, data_end);
	case bpf_htons(ETH_P_IPV6):
		return decap_v6(ctx, &pkt, data_end);
	default:
		return XDP_PASS;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
