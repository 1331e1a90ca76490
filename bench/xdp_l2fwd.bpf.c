// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The plain-XDP reference for the packet-rate benchmark: what any XDP
 * forwarder must at least do on the balancer's path. Parses Ethernet, IPv4
 * and the ports, picks one of n next hops by the source port, rewrites both
 * MACs and transmits out of the same interface (XDP_TX), like lbctl l2dsr
 * but without VIP lookup, hashing or connection tracking.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_HOPS 8

struct l2fwd_config {
	unsigned char src_mac[ETH_ALEN];
	__u16 hops;
	unsigned char dst_mac[MAX_HOPS][ETH_ALEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct l2fwd_config);
} l2fwd_config SEC(".maps");

SEC("xdp")
int xdp_l2fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *l4 = (void *)(ip + 1);
	const struct l2fwd_config *cfg;
	__u32 key = 0, hop;

	if ((void *)(l4 + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    (ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_TCP))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&l2fwd_config, &key);
	if (!cfg || cfg->hops == 0 || cfg->hops > MAX_HOPS)
		return XDP_PASS;
	hop = bpf_ntohs(l4->source) % cfg->hops;
	/* hop < hops <= MAX_HOPS already: keep clang from dropping the check
	 * the verifier needs. */
	asm volatile("" : "+r"(hop));
	if (hop >= MAX_HOPS)
		return XDP_PASS;
	__builtin_memcpy(eth->h_dest, cfg->dst_mac[hop], ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->src_mac, ETH_ALEN);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
