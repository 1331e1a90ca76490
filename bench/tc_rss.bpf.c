// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tc_rss: a NIC's receive-side scaling, for tests built of veth pairs
 * (test/rss-spread.test.ts). A veth delivers a frame to the receive queue
 * of its peer that matches the transmit queue it was sent on; the kernel
 * picks that queue by its own hash, which looks inside IP-in-IP (or by the
 * queue the frame came in on), where a NIC's RSS hashes only the outer
 * addresses of a tunnelled packet: it knows no ports in it. Attached to the
 * egress of the switch's port towards a backend, this picks the queue from
 * the outer source and destination alone, one of RSS_QUEUES, as such a NIC
 * would. skb->queue_mapping is also the "received on" queue plus one, which
 * the kernel's queue choice honours for a forwarded frame.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define RSS_QUEUES 4

/* Multiplicative mixing of 32-bit words (host order: a product's top bits depend on every bit). */
static __always_inline __u32 mix(__u32 h, __be32 word)
{
	return (h ^ bpf_ntohl(word)) * 0x9e3779b1u;
}

SEC("tc")
int tc_rss(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 h = 0;
	int i;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return TC_ACT_OK;
		h = mix(mix(0, ip->saddr), ip->daddr);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_OK;
		for (i = 0; i < 4; i++)
			h = mix(mix(h, ip6->saddr.in6_u.u6_addr32[i]), ip6->daddr.in6_u.u6_addr32[i]);
	} else {
		return TC_ACT_OK;
	}
	skb->queue_mapping = (h >> 24) % RSS_QUEUES + 1;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
