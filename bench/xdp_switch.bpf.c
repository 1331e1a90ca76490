// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A learning-free XDP switch for the packet-rate benchmark: on the lab's
 * switch ports, frames to a known MAC (the benchmark's hosts) are
 * redirected straight to that host's port; everything else (ARP, broadcast,
 * other hosts) passes to the Linux bridge as before. Frames then travel the
 * lab as XDP frames, as from a NIC's driver, and not as socket buffers
 * through the bridge, whose per-packet cost would dwarf the balancers'.
 * It also counts the benchmark's UDP packets (destination port
 * BENCH_UDP_PORT, plain or inside IP-in-IP) per ingress port.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "bench.h"

struct mac_key {
	unsigned char addr[ETH_ALEN];
	__u16 pad;
};

/* Destination MAC -> key in ports. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct mac_key);
	__type(value, __u32);
} switch_macs SEC(".maps");

/* Written from inside the switch's namespace: ifindexes are per namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} switch_ports SEC(".maps");

/* Benchmark packets received, by ingress ifindex % 256. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} switch_counts SEC(".maps");

static __always_inline int bench_udp(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5)
		return 0;
	if (ip->protocol == IPPROTO_IPIP) {
		ip = ip + 1;
		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return 0;
	}
	udp = (void *)(ip + 1);
	return ip->protocol == IPPROTO_UDP && (void *)(udp + 1) <= data_end &&
	       udp->dest == bpf_htons(BENCH_UDP_PORT);
}

SEC("xdp")
int xdp_switch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct mac_key key = {};
	__u32 *port, in = ctx->ingress_ifindex & 255;
	__u64 *count;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(key.addr, eth->h_dest, ETH_ALEN);
	port = bpf_map_lookup_elem(&switch_macs, &key);
	if (!port)
		return XDP_PASS;
	if (bench_udp(data, data_end)) {
		count = bpf_map_lookup_elem(&switch_counts, &in);
		if (count)
			*count += 1;
	}
	return bpf_redirect_map(&switch_ports, *port, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
