/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing with the bounds checks the verifier (and safety) need. */
#ifndef LBCTL_PARSE_H
#define LBCTL_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

#define IPV4_MF 0x2000
#define IPV4_OFFSET_MASK 0x1fff

/* A parsed IPv4 TCP/UDP packet. */
struct packet_v4 {
	struct ethhdr *eth;
	struct iphdr *ip;
	__be16 sport;
	__be16 dport;
	__u32 ports_word; /* both ports as one word, as loaded from the wire */
	__u16 ip_len;   /* total length, host order */
	bool new_tcp;   /* SYN without ACK: a connection starts */
	bool end_tcp;   /* FIN or RST: the client ends the connection */
};

/* Returns the EtherType in network order, or 0 if the frame is too short. */
static __always_inline __be16 parse_eth(void *data, void *data_end, struct ethhdr **eth)
{
	struct ethhdr *hdr = data;

	if ((void *)(hdr + 1) > data_end)
		return 0;
	*eth = hdr;
	return hdr->h_proto;
}

/*
 * Parses an IPv4 header without options and the ports of the TCP or UDP
 * header after it. Returns LB_REASON_MAX on success, otherwise the reason
 * the packet is not balanceable.
 */
static __always_inline enum lb_reason parse_ipv4_l4(struct ethhdr *eth, void *data_end,
						    struct packet_v4 *pkt)
{
	struct iphdr *ip = (void *)(eth + 1);
	void *l4;
	__u16 ip_len;

	if ((void *)(ip + 1) > data_end)
		return LB_REASON_IP_TRUNCATED;
	if (ip->version != 4 || ip->ihl < 5)
		return LB_REASON_IP_TRUNCATED;
	if (ip->ihl != 5)
		return LB_REASON_IP_OPTIONS;
	ip_len = bpf_ntohs(ip->tot_len);
	if (ip_len < sizeof(*ip) || (void *)ip + ip_len > data_end)
		return LB_REASON_IP_TRUNCATED;
	if (ip->frag_off & bpf_htons(IPV4_MF | IPV4_OFFSET_MASK))
		return LB_REASON_FRAGMENT;

	l4 = ip + 1;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end || sizeof(*ip) + sizeof(*tcp) > ip_len)
			return LB_REASON_L4_TRUNCATED;
		pkt->new_tcp = tcp->syn && !tcp->ack;
		pkt->end_tcp = tcp->fin || tcp->rst;
		break;
	}
	case IPPROTO_UDP:
		if (l4 + sizeof(struct udphdr) > data_end || sizeof(*ip) + sizeof(struct udphdr) > ip_len)
			return LB_REASON_L4_TRUNCATED;
		pkt->new_tcp = false;
		pkt->end_tcp = false;
		break;
	default:
		return LB_REASON_L4_UNSUPPORTED;
	}

	pkt->eth = eth;
	pkt->ip = ip;
	pkt->sport = ((__be16 *)l4)[0];
	pkt->dport = ((__be16 *)l4)[1];
	pkt->ports_word = *(__u32 *)l4;
	pkt->ip_len = ip_len;
	return LB_REASON_MAX;
}

#endif /* LBCTL_PARSE_H */
