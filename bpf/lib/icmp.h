/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP the balancer answers itself: echo requests to VIP addresses, and
 * "fragmentation needed" / "packet too big" when a packet would be too big
 * once encapsulated, so that path MTU discovery works through the balancer.
 */
#ifndef LBCTL_ICMP_H
#define LBCTL_ICMP_H

#include <linux/bpf.h>
#include <linux/icmpv6.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "csum.h"
#include "parse.h"

/* <linux/icmp.h> drags in libc headers that do not build for BPF. */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 id;
			__be16 sequence;
		} echo;
		struct {
			__be16 unused;
			__be16 mtu;
		} frag;
	} un;
};

#define ICMP_REPLY_TTL 64
/* What too-big answers quote of the packet: the IPv4 header with its
 * options + 8 bytes (RFC 792; at most 60 + 8), the IPv6 header + 8 bytes:
 * enough for the sender to find the connection. */
#define QUOTE_V4_MAX (60 + 8)
#define QUOTE_V6 (sizeof(struct ipv6hdr) + 8)
#define IPV6_MIN_MTU 1280
/* packet_bytes_zero() reads at most this many 64-byte chunks: a jumbo frame's worth. */
#define ICMP_ZERO_SCAN_CHUNKS 144

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
}

/*
 * Are all `len` bytes of the packet from `offset` zero? The checksum of an
 * ICMP message whose words are all zero is 0xffff (their sum is +0, and
 * the kernel, summing the checksum with them, wants -0 = 0xffff), which an
 * incremental update cannot tell from the 0x0000 of words summing to -0.
 * Reached once in 65536 echo replies at most: a loop the verifier checks
 * on its own, not inlined.
 */
__attribute__((noinline)) int packet_bytes_zero(struct xdp_md *ctx, __u32 offset, __u32 len)
{
	__u64 chunk[8];
	__u32 i, done, n;

	for (i = 0; i < ICMP_ZERO_SCAN_CHUNKS; i++) {
		done = i * sizeof(chunk);
		if (done >= len)
			return 1;
		n = len - done > sizeof(chunk) ? sizeof(chunk) : len - done;
		__builtin_memset(chunk, 0, sizeof(chunk));
		/* The size expression keeps the verifier sure it is from 1 to 64. */
		if (bpf_xdp_load_bytes(ctx, offset + done, chunk, ((n - 1) & 63) + 1))
			return 0;
		if (chunk[0] | chunk[1] | chunk[2] | chunk[3] | chunk[4] | chunk[5] | chunk[6] | chunk[7])
			return 0;
	}
	return 0;
}

/* An echo request (already known to be for a VIP address) becomes the reply. */
static __always_inline int reply_echo_v4(struct xdp_md *ctx, struct packet *pkt, void *data_end)
{
	struct iphdr *ip = pkt->l3;
	struct icmphdr *icmp = pkt->l4;
	__be32 addr;

	if ((void *)(icmp + 1) > data_end || ip->ihl != 5 || (void *)(ip + 1) > data_end)
		return -1;
	swap_macs(pkt->eth);
	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->ttl = ICMP_REPLY_TTL;
	ip->check = 0;
	ip->check = csum_fold32(csum_words(ip, sizeof(*ip), 0));
	icmp->checksum = csum_replace16(icmp->checksum, bpf_htons(ICMP_ECHO << 8), bpf_htons(ICMP_ECHOREPLY << 8));
	icmp->type = ICMP_ECHOREPLY;
	if (icmp->checksum == 0 && packet_bytes_zero(ctx, (void *)icmp - (void *)pkt->eth, pkt->ip_len - sizeof(*ip)))
		icmp->checksum = 0xffff;
	return 0;
}

static __always_inline int reply_echo_v6(struct packet *pkt, void *data_end)
{
	struct ipv6hdr *ip6 = pkt->l3;
	struct icmp6hdr *icmp6 = pkt->l4;
	struct in6_addr addr;

	if ((void *)(icmp6 + 1) > data_end || (void *)(ip6 + 1) > data_end)
		return -1;
	swap_macs(pkt->eth);
	/* Swapping the addresses leaves the pseudo-header's sum as it was. */
	addr = ip6->saddr;
	ip6->saddr = ip6->daddr;
	ip6->daddr = addr;
	ip6->hop_limit = ICMP_REPLY_TTL;
	icmp6->icmp6_cksum = csum_replace16(icmp6->icmp6_cksum, bpf_htons(ICMPV6_ECHO_REQUEST << 8), bpf_htons(ICMPV6_ECHO_REPLY << 8));
	icmp6->icmp6_type = ICMPV6_ECHO_REPLY;
	return 0;
}

/*
 * Replaces the frame with an ICMP "fragmentation needed" (v4) or "packet
 * too big" (v6) to its sender, from the address it was sent to, carrying
 * `mtu` and the quoted start of the packet. The L2 header (and a VLAN tag)
 * is kept, with the MACs swapped. Built on the stack and written back in
 * one piece: the rare path, kept simple for the verifier.
 */
struct too_big_v4 {
	struct iphdr ip;
	struct icmphdr icmp;
	__u8 quote[QUOTE_V4_MAX];
};

struct too_big_v6 {
	struct ipv6hdr ip6;
	struct icmp6hdr icmp6;
	__u8 quote[QUOTE_V6];
};

static __always_inline int finish_reply(struct xdp_md *ctx, __u32 l2_len, void *reply, __u32 reply_len)
{
	__u8 l2[sizeof(struct ethhdr) + VLAN_HLEN];
	struct ethhdr *eth = (void *)l2;
	int current = bpf_xdp_get_buff_len(ctx);

	if (bpf_xdp_load_bytes(ctx, 0, l2, l2_len))
		return -1;
	swap_macs(eth);
	if (bpf_xdp_adjust_tail(ctx, (int)(l2_len + reply_len) - current))
		return -1;
	if (bpf_xdp_store_bytes(ctx, 0, l2, l2_len))
		return -1;
	return bpf_xdp_store_bytes(ctx, l2_len, reply, reply_len);
}

static __always_inline int reply_too_big_v4(struct xdp_md *ctx, const struct packet *pkt, __u16 mtu)
{
	const struct iphdr *orig = pkt->l3;
	struct too_big_v4 r = {};
	__u32 quote_len = orig->ihl * 4 + 8;
	__u32 reply_len = sizeof(r.ip) + sizeof(r.icmp) + quote_len;

	if (quote_len > QUOTE_V4_MAX || pkt->ip_len < quote_len)
		return -1;
	if (bpf_xdp_load_bytes(ctx, pkt->l2_len, r.quote, quote_len))
		return -1;
	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tot_len = bpf_htons(reply_len);
	r.ip.ttl = ICMP_REPLY_TTL;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = orig->daddr;
	r.ip.daddr = orig->saddr;
	r.ip.check = csum_fold32(csum_words(&r.ip, sizeof(r.ip), 0));
	r.icmp.type = ICMP_DEST_UNREACH;
	r.icmp.code = ICMP_FRAG_NEEDED;
	r.icmp.un.frag.mtu = bpf_htons(mtu);
	/* The quote's unused tail is zero and quote_len even: summing all of it changes nothing. */
	r.icmp.checksum = csum_fold32(csum_words(&r.icmp, sizeof(r.icmp) + sizeof(r.quote), 0));
	return finish_reply(ctx, pkt->l2_len == sizeof(struct ethhdr) ? sizeof(struct ethhdr) : sizeof(struct ethhdr) + VLAN_HLEN, &r, reply_len);
}

static __always_inline int reply_too_big_v6(struct xdp_md *ctx, const struct packet *pkt, __u32 mtu)
{
	const struct ipv6hdr *orig = pkt->l3;
	struct too_big_v6 r = {};
	__u32 sum;

	if (pkt->ip_len < QUOTE_V6)
		return -1;
	if (bpf_xdp_load_bytes(ctx, pkt->l2_len, r.quote, QUOTE_V6))
		return -1;
	r.ip6.version = 6;
	r.ip6.payload_len = bpf_htons(sizeof(r.icmp6) + QUOTE_V6);
	r.ip6.nexthdr = IPPROTO_ICMPV6;
	r.ip6.hop_limit = ICMP_REPLY_TTL;
	r.ip6.saddr = orig->daddr;
	r.ip6.daddr = orig->saddr;
	r.icmp6.icmp6_type = ICMPV6_PKT_TOOBIG;
	r.icmp6.icmp6_mtu = bpf_htonl(mtu < IPV6_MIN_MTU ? IPV6_MIN_MTU : mtu);
	/* Pseudo-header: addresses, upper-layer length, next header. */
	sum = csum_words(&r.ip6.saddr, 2 * sizeof(struct in6_addr), 0);
	sum += bpf_htons(sizeof(r.icmp6) + QUOTE_V6) + bpf_htons(IPPROTO_ICMPV6);
	r.icmp6.icmp6_cksum = csum_fold32(csum_words(&r.icmp6, sizeof(r.icmp6) + QUOTE_V6, sum));
	return finish_reply(ctx, pkt->l2_len == sizeof(struct ethhdr) ? sizeof(struct ethhdr) : sizeof(struct ethhdr) + VLAN_HLEN, &r, sizeof(r));
}

#endif /* LBCTL_ICMP_H */
