/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing with the bounds checks the verifier (and safety) need.
 * Every length read from a header is checked against the frame before a
 * byte behind it is touched.
 */
#ifndef LBCTL_PARSE_H
#define LBCTL_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "csum.h"

#define IPV4_DF 0x4000
#define IPV4_MF 0x2000
#define IPV4_OFFSET_MASK 0x1fff
#define VLAN_HLEN 4
/* Hop-by-hop and destination options headers skipped before giving up. */
#define IPV6_MAX_OPTION_HEADERS 3

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

static __always_inline bool ipv6_addr_equal(const struct in6_addr *a, const struct in6_addr *b)
{
	return a->in6_u.u6_addr32[0] == b->in6_u.u6_addr32[0] && a->in6_u.u6_addr32[1] == b->in6_u.u6_addr32[1] &&
	       a->in6_u.u6_addr32[2] == b->in6_u.u6_addr32[2] && a->in6_u.u6_addr32[3] == b->in6_u.u6_addr32[3];
}

/* What the balancer needs to know about a packet, whichever its family. */
struct packet {
	struct ethhdr *eth;
	void *l3;          /* the IP header */
	void *l4;          /* TCP, UDP or ICMP header */
	__u32 l2_len;      /* Ethernet header, and one VLAN tag if there is one */
	__u32 ip_len;      /* the IP packet's length, header included */
	__u8 proto;        /* L4 protocol, after IPv6 option headers */
	bool df;           /* IPv4: don't fragment. IPv6: always */
	__be16 sport;
	__be16 dport;
	bool new_tcp;      /* SYN without ACK: a connection starts */
	bool end_tcp;      /* FIN or RST: the client ends the connection */
	bool rst_tcp;      /* RST */
};

/*
 * Ethernet, and one 802.1Q/802.1ad tag if present. Returns the EtherType
 * of the payload in network order, or 0 when the frame is cut short or
 * carries stacked tags (*reason says which).
 */
static __always_inline __be16 parse_l2(void *data, void *data_end, struct packet *pkt, enum lb_reason *reason)
{
	struct ethhdr *eth = data;
	struct vlan_tag *tag;
	__be16 proto;

	*reason = LB_REASON_NOT_IP;
	if ((void *)(eth + 1) > data_end)
		return 0;
	pkt->eth = eth;
	pkt->l2_len = sizeof(*eth);
	proto = eth->h_proto;
	if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
		return proto;

	tag = (void *)(eth + 1);
	if ((void *)(tag + 1) > data_end)
		return 0;
	proto = tag->proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		*reason = LB_REASON_VLAN_STACKED;
		return 0;
	}
	pkt->l2_len = sizeof(*eth) + VLAN_HLEN;
	return proto;
}

/*
 * TCP or UDP ports and flags at pkt->l4, within ip_len bytes from l3. A
 * header whose own length field does not fit the packet is malformed: it
 * is not forwarded (the backend would only drop it).
 */
static __always_inline enum lb_reason parse_ports(struct packet *pkt, void *data_end)
{
	__u32 l4_offset = pkt->l4 - pkt->l3;
	__u32 l4_len = pkt->ip_len - l4_offset;

	switch (pkt->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = pkt->l4;

		if ((void *)(tcp + 1) > data_end || l4_offset + sizeof(*tcp) > pkt->ip_len)
			return LB_REASON_L4_TRUNCATED;
		if (tcp->doff < 5 || tcp->doff * 4 > l4_len)
			return LB_REASON_MALFORMED;
		pkt->sport = tcp->source;
		pkt->dport = tcp->dest;
		pkt->new_tcp = tcp->syn && !tcp->ack;
		pkt->end_tcp = tcp->fin || tcp->rst;
		pkt->rst_tcp = tcp->rst;
		return LB_REASON_MAX;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = pkt->l4;

		if ((void *)(udp + 1) > data_end || l4_offset + sizeof(*udp) > pkt->ip_len)
			return LB_REASON_L4_TRUNCATED;
		if (bpf_ntohs(udp->len) < sizeof(*udp) || bpf_ntohs(udp->len) > l4_len)
			return LB_REASON_MALFORMED;
		pkt->sport = udp->source;
		pkt->dport = udp->dest;
		pkt->new_tcp = false;
		pkt->end_tcp = false;
		pkt->rst_tcp = false;
		return LB_REASON_MAX;
	}
	default:
		return LB_REASON_L4_UNSUPPORTED;
	}
}

/*
 * Rare packets, checked by functions the verifier checks on their own
 * (global, not inlined): a loop over a variable-length header inlined into
 * every path would multiply the states it explores.
 */

/* Every IPv4 option's length stays within the options area (RFC 791). */
__attribute__((noinline)) int ipv4_options_valid(struct xdp_md *ctx, __u32 offset, __u32 len)
{
	__u8 opt[64] = {};
	__u32 j, skip = 0, olen;

	/* The size expression keeps the verifier sure it is from 1 to 64. */
	if (len == 0 || len > 40 || bpf_xdp_load_bytes(ctx, offset, opt, ((len - 1) & 63) + 1))
		return 0;
	/* One step per byte (the verifier follows a plain counter easily). */
	for (j = 0; j < 40; j++) {
		if (j >= len)
			return 1;
		if (skip) {
			skip--;
			continue;
		}
		if (opt[j] == 0) /* end of options */
			return 1;
		if (opt[j] == 1) /* no operation */
			continue;
		if (j + 1 >= len)
			return 0;
		olen = opt[j + 1];
		if (olen < 2 || j + olen > len)
			return 0;
		skip = olen - 1;
	}
	return 1;
}

/* The checksum of an IPv4 header with options. */
__attribute__((noinline)) int ipv4_long_header_valid(struct xdp_md *ctx, __u32 offset, __u32 hlen)
{
	__u16 words[32] = {};
	__u32 sum = 0;
	int i;

	if (hlen < 20 || hlen > 60 || bpf_xdp_load_bytes(ctx, offset, words, ((hlen - 1) & 63) + 1))
		return 0;
	for (i = 0; i < 32; i++)
		sum += words[i];
	return csum_fold32(sum) == 0;
}

/*
 * IPv4, options allowed. Returns LB_REASON_MAX when the packet is TCP, UDP
 * or ICMP with its L4 header located (ports parsed for TCP and UDP),
 * otherwise the reason it cannot be balanced.
 */
static __always_inline enum lb_reason parse_ipv4(struct xdp_md *ctx, struct packet *pkt, void *data_end)
{
	struct iphdr *ip = (void *)pkt->eth + pkt->l2_len;
	__u32 hlen;

	if ((void *)(ip + 1) > data_end)
		return LB_REASON_MALFORMED;
	hlen = ip->ihl * 4;
	pkt->ip_len = bpf_ntohs(ip->tot_len);
	if (ip->version != 4 || hlen < sizeof(*ip) || pkt->ip_len < hlen || (void *)ip + pkt->ip_len > data_end)
		return LB_REASON_MALFORMED;
	if (ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET_MASK))
		return LB_REASON_FRAGMENT;

	if (hlen > sizeof(*ip) && !ipv4_options_valid(ctx, (void *)(ip + 1) - (void *)pkt->eth, hlen - sizeof(*ip)))
		return LB_REASON_MALFORMED;

	pkt->l3 = ip;
	pkt->l4 = (void *)ip + hlen;
	pkt->proto = ip->protocol;
	pkt->df = (ip->frag_off & bpf_htons(IPV4_DF)) != 0;
	if (pkt->proto == IPPROTO_ICMP)
		return LB_REASON_MAX;
	return parse_ports(pkt, data_end);
}

/*
 * IPv6: hop-by-hop and destination options are skipped; a routing or
 * fragment header stops balancing (the packet goes to the kernel).
 */
static __always_inline enum lb_reason parse_ipv6(struct packet *pkt, void *data_end)
{
	struct ipv6hdr *ip6 = (void *)pkt->eth + pkt->l2_len;
	void *cursor = ip6 + 1;
	__u8 next;
	int i;

	if ((void *)(ip6 + 1) > data_end)
		return LB_REASON_MALFORMED;
	pkt->ip_len = sizeof(*ip6) + (__u32)bpf_ntohs(ip6->payload_len);
	if (ip6->version != 6 || (void *)ip6 + pkt->ip_len > data_end)
		return LB_REASON_MALFORMED;

	next = ip6->nexthdr;
#pragma unroll
	for (i = 0; i < IPV6_MAX_OPTION_HEADERS; i++) {
		struct ipv6_opt_hdr *opt = cursor;

		if (next != IPPROTO_HOPOPTS && next != IPPROTO_DSTOPTS)
			break;
		if (next == IPPROTO_HOPOPTS && i > 0) /* hop-by-hop comes first or not at all */
			return LB_REASON_MALFORMED;
		if ((void *)(opt + 1) > data_end)
			return LB_REASON_MALFORMED;
		next = opt->nexthdr;
		cursor += (opt->hdrlen + 1) * 8;
		if (cursor > (void *)ip6 + pkt->ip_len)
			return LB_REASON_MALFORMED;
	}
	if (next == IPPROTO_ROUTING)
		return LB_REASON_IPV6_ROUTING;
	if (next == IPPROTO_FRAGMENT)
		return LB_REASON_FRAGMENT;

	pkt->l3 = ip6;
	pkt->l4 = cursor;
	pkt->proto = next;
	pkt->df = true;
	if (next == IPPROTO_ICMPV6)
		return LB_REASON_MAX;
	return parse_ports(pkt, data_end);
}

#endif /* LBCTL_PARSE_H */
