/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Direct server return: L2 rewrite, or IP-in-IP towards a backend. */
#ifndef LBCTL_FORWARD_H
#define LBCTL_FORWARD_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "csum.h"
#include "parse.h"

/* Hop limit of outer headers: the tunnel must reach the backend whatever
 * the client's packet had left. */
#define ENCAP_TTL 64

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

static __always_inline int forward_l2dsr(struct xdp_md *ctx, struct ethhdr *eth, const struct backend_info *be)
{
	set_macs(eth, be);
	return transmit(ctx, be);
}

/* What the outer header copies from the inner one. */
struct inner_fields {
	__u16 len;  /* the inner IP packet's length */
	__u8 tos;   /* TOS / traffic class */
	__u8 proto; /* of the outer header: IPPROTO_IPIP or IPPROTO_IPV6 */
	__be16 id;  /* IPv4 identification, 0 for IPv6 */
	__be16 df;  /* IPV4_DF in network order when the inner packet must not be fragmented */
};

static __always_inline void inner_fields_of(const struct packet *pkt, bool inner_v6, struct inner_fields *in)
{
	in->len = pkt->ip_len;
	if (inner_v6) {
		struct ipv6hdr *ip6 = pkt->l3;

		in->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		in->proto = IPPROTO_IPV6;
		in->id = 0;
		in->df = bpf_htons(IPV4_DF);
	} else {
		struct iphdr *ip = pkt->l3;

		in->tos = ip->tos;
		in->proto = IPPROTO_IPIP;
		in->id = ip->id;
		in->df = ip->frag_off & bpf_htons(IPV4_DF);
	}
}

/* Does encapsulating for this backend take the flow's hash (an outer source range, an IPv6 flow label)? */
static __always_inline bool encap_needs_hash(const struct backend_info *be)
{
	return be->forward == LB_FORWARD_IPIP && (be->tunnel_src_spread || (be->flags & LB_BACKEND_F_IPV6));
}

static __always_inline int write_outer_v4(struct iphdr *outer, void *data_end, const struct backend_info *be,
					  const struct inner_fields *in, __u32 hash)
{
	__u16 *words = (__u16 *)outer;
	/* The low bits of the hash make the host part of the source. */
	__u32 host = bpf_htonl(hash) & be->tunnel_src_spread;
	__u32 sum;

	if ((void *)(outer + 1) > data_end)
		return -1;
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = in->tos;
	outer->tot_len = bpf_htons(in->len + sizeof(struct iphdr));
	outer->id = in->id;
	outer->frag_off = in->df;
	outer->ttl = ENCAP_TTL;
	outer->protocol = in->proto;
	outer->check = 0;
	outer->saddr = be->tunnel_src[0] | host;
	outer->daddr = be->address[0];
	/* The address words are summed once by the control plane, the range's
	 * bits (zero in tunnel_src: or is add) per packet. */
	sum = be->tunnel_csum_base + (host & 0xffff) + (host >> 16) + words[0] + words[1] + words[2] + words[3] + words[4];
	outer->check = csum_fold32(sum);
	return 0;
}

/*
 * The outer IPv6 header labels the flow (RFC 6438): the top 20 bits of the
 * flow's hash (0, "not labelled", becomes 1), so that routers and NICs that
 * hash the label spread the tunnelled flows.
 */
static __always_inline int write_outer_v6(struct ipv6hdr *outer, void *data_end, const struct backend_info *be,
					  const struct inner_fields *in, __u32 hash)
{
	__u32 label = hash >> 12 ?: 1;

	if ((void *)(outer + 1) > data_end)
		return -1;
	outer->version = 6;
	outer->priority = in->tos >> 4;
	outer->flow_lbl[0] = ((in->tos & 0x0f) << 4) | (label >> 16);
	outer->flow_lbl[1] = (label >> 8) & 0xff;
	outer->flow_lbl[2] = label & 0xff;
	outer->payload_len = bpf_htons(in->len);
	outer->nexthdr = in->proto == IPPROTO_IPIP ? IPPROTO_IPIP : IPPROTO_IPV6;
	outer->hop_limit = ENCAP_TTL;
	__builtin_memcpy(&outer->saddr, be->tunnel_src, sizeof(outer->saddr));
	outer->saddr.in6_u.u6_addr32[3] |= bpf_htonl(hash) & be->tunnel_src_spread;
	__builtin_memcpy(&outer->daddr, be->address, sizeof(outer->daddr));
	return 0;
}

/*
 * Prepends an outer IP header of the backend's family to the IP packet
 * after the L2 header (4-in-4, 6-in-6, 4-in-6, 6-in-4), keeps a VLAN tag,
 * sets the MACs for the next hop. `hash` is the flow's (encap_needs_hash).
 * Returns -1 if there is no room.
 */
static __always_inline int encapsulate(struct xdp_md *ctx, const struct packet *pkt, const struct backend_info *be,
				       bool inner_v6, __u32 hash)
{
	bool outer_v6 = be->flags & LB_BACKEND_F_IPV6;
	int overhead = outer_v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	__be16 outer_type = outer_v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	bool tagged = pkt->l2_len != sizeof(struct ethhdr);
	struct inner_fields in;
	struct vlan_tag tag = {};
	__be16 tpid = 0;
	struct ethhdr *eth;
	void *data, *data_end;

	inner_fields_of(pkt, inner_v6, &in);
	if (tagged) {
		struct vlan_tag *old = (void *)(pkt->eth + 1);

		if ((void *)(old + 1) > pkt->l3)
			return -1;
		tpid = pkt->eth->h_proto;
		tag.tci = old->tci;
	}

	if (bpf_xdp_adjust_head(ctx, -overhead))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	set_macs(eth, be);

	if (tagged) {
		struct vlan_tag *new_tag = (void *)(eth + 1);
		void *outer = new_tag + 1;

		if ((void *)(new_tag + 1) > data_end)
			return -1;
		eth->h_proto = tpid;
		new_tag->tci = tag.tci;
		new_tag->proto = outer_type;
		return outer_v6 ? write_outer_v6(outer, data_end, be, &in, hash)
				: write_outer_v4(outer, data_end, be, &in, hash);
	}
	eth->h_proto = outer_type;
	return outer_v6 ? write_outer_v6((void *)(eth + 1), data_end, be, &in, hash)
			: write_outer_v4((void *)(eth + 1), data_end, be, &in, hash);
}

/* Bytes the outer header adds for this backend. */
static __always_inline __u16 encap_overhead(const struct backend_info *be)
{
	return be->flags & LB_BACKEND_F_IPV6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
}

#endif /* LBCTL_FORWARD_H */
