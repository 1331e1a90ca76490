/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Direct server return: L2 rewrite or IP-in-IP towards a backend. */
#ifndef LBCTL_FORWARD_H
#define LBCTL_FORWARD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "csum.h"

#define IPV4_DF 0x4000

static __always_inline void set_macs(struct ethhdr *eth, const struct backend_info *be)
{
	__builtin_memcpy(eth->h_dest, be->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, be->src_mac, ETH_ALEN);
}

/* Transmits on the ingress interface, or redirects to another one. */
static __always_inline int transmit(struct xdp_md *ctx, const struct backend_info *be)
{
	if (be->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(be->ifindex, 0);
}

static __always_inline int forward_l2dsr(struct xdp_md *ctx, struct ethhdr *eth,
					 const struct backend_info *be)
{
	set_macs(eth, be);
	return transmit(ctx, be);
}

/*
 * Prepends an outer IPv4 header (protocol 4) to the IPv4 packet after the
 * Ethernet header. TOS, identification, DF and TTL are copied from the inner
 * header, so the tunnel is invisible to path MTU discovery and traceroute.
 * Returns -1 if there is no headroom.
 */
static __always_inline int encap_ipip(struct xdp_md *ctx, const struct backend_info *be)
{
	struct ethhdr *eth;
	struct iphdr *outer, *inner;
	void *data, *data_end;
	__u16 *words;
	__u32 sum;

	if (bpf_xdp_adjust_head(ctx, -(int)sizeof(struct iphdr)))
		return -1;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = (void *)(eth + 1);
	inner = outer + 1;
	if ((void *)(inner + 1) > data_end)
		return -1;

	set_macs(eth, be);
	eth->h_proto = bpf_htons(ETH_P_IP);

	outer->version = 4;
	outer->ihl = 5;
	outer->tos = inner->tos;
	outer->tot_len = bpf_htons(bpf_ntohs(inner->tot_len) + sizeof(struct iphdr));
	outer->id = inner->id;
	outer->frag_off = inner->frag_off & bpf_htons(IPV4_DF);
	outer->ttl = inner->ttl;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = be->tunnel_src;
	outer->daddr = be->address;

	/* The address words are summed once by the control plane. */
	words = (__u16 *)outer;
	sum = be->tunnel_csum_base;
	sum += words[0];
	sum += words[1];
	sum += words[2];
	sum += words[3];
	sum += words[4];
	outer->check = csum_fold32(sum);
	return 0;
}

#endif /* LBCTL_FORWARD_H */
