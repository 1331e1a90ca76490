// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Traffic generator for the packet-rate benchmark, run with
 * BPF_PROG_TEST_RUN + BPF_F_TEST_XDP_LIVE_FRAMES (bench/traffic-gen.ts).
 *
 * Live frames are recycled pages that come back holding whatever the
 * receiver wrote into them (a balancer rewrites MACs, prepends tunnel
 * headers): every header is written again on every run. Each run is one
 * 60-byte UDP packet of flow `n`, n counting per CPU modulo flow_mask + 1:
 * source port sport_base + n % 65536, source address saddr + n / 65536.
 * XDP_TX sends it out of the interface named as ingress.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "bench.h"

struct gen_config {
	unsigned char dst_mac[ETH_ALEN];
	unsigned char src_mac[ETH_ALEN];
	__be32 saddr;       /* first source address */
	__be32 daddr;
	__u16 sport_base;   /* host order */
	__u16 dport;        /* host order; 0: BENCH_UDP_PORT */
	__u32 flow_mask;    /* flows - 1, flows a power of two */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} gen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_counter SEC(".maps");

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int xdp_traffic_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	const struct gen_config *cfg;
	__u32 key = 0, flow, saddr;
	__u64 *counter;
	__u16 *words;
	__u32 sum = 0;
	int i;

	if (data + BENCH_FRAME_LEN > data_end)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&gen_config, &key);
	counter = bpf_map_lookup_elem(&gen_counter, &key);
	if (!cfg || !counter)
		return XDP_ABORTED;
	flow = (__u32)(*counter)++ & cfg->flow_mask;

	__builtin_memcpy(eth->h_dest, cfg->dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->src_mac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);

	saddr = bpf_ntohl(cfg->saddr) + (flow >> 16);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(BENCH_FRAME_LEN - sizeof(*eth));
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = bpf_htonl(saddr);
	ip->daddr = cfg->daddr;
	words = (__u16 *)ip;
#pragma unroll
	for (i = 0; i < 10; i++)
		sum += words[i];
	ip->check = csum_fold(sum);

	udp->source = bpf_htons((__u16)(cfg->sport_base + (flow & 0xffff)));
	udp->dest = bpf_htons(cfg->dport ? cfg->dport : BENCH_UDP_PORT);
	udp->len = bpf_htons(BENCH_FRAME_LEN - sizeof(*eth) - sizeof(*ip));
	udp->check = 0; /* optional in IPv4 */
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
