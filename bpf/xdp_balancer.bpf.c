// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_balancer: Maglev load balancing with direct server return.
 *
 * A packet to a VIP keeps the backend its flow already has (connection
 * tracking), or gets one from the VIP's Maglev table, and leaves towards it
 * either with a rewritten destination MAC (l2dsr) or inside an outer IPv4
 * header (ipip). Everything else goes to the kernel untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/jhash.h"
#include "lib/forward.h"

/* Fixed so that every balancer given the same backends picks the same one
 * for a flow: src/dataplane/flow-hash.ts uses the same value. */
#define LB_FLOW_HASH_SEED 0x4c42u

static __always_inline int count_reason(enum lb_reason reason, int action)
{
	__u32 key = reason;
	__u64 *count = bpf_map_lookup_elem(&reasons, &key);

	if (count)
		*count += 1;
	return action;
}

/* How the flow got its backend, for the counters. */
enum flow_verdict {
	FLOW_TRACKED, /* connection tracking knew it */
	FLOW_NEW,     /* first packet (or a SYN): from the Maglev table */
	FLOW_MOVED,   /* tracked, but its backend is gone: from the table */
};

/*
 * Tracked flows note their activity (drains read it) at most once per this
 * many jiffies: about a second at the usual HZ. The clock is jiffies because
 * it is a plain load; the ktime helpers cost ~50 ns per packet on these hosts.
 */
#define LB_FLOW_TOUCH_JIFFIES 256

static __always_inline void count_traffic(void *map, __u32 id, __u64 bytes, enum flow_verdict verdict)
{
	struct traffic_counters *c = bpf_map_lookup_elem(map, &id);

	if (!c)
		return;
	c->packets += 1;
	c->bytes += bytes;
	if (verdict != FLOW_TRACKED) {
		c->new_flows += 1;
		if (verdict == FLOW_MOVED)
			c->moved_flows += 1;
	}
}

/* Has the control plane stopped confirming it is alive (or been told to stop)? */
static __always_inline bool kill_switch_tripped(__u64 now)
{
	__u32 zero = 0;
	struct lb_settings *cfg = bpf_map_lookup_elem(&settings, &zero);

	return !cfg || now > cfg->kill_switch_deadline;
}

/* Maps the flow hash onto [0, table_size) without a division. */
static __always_inline __u32 table_slot(__u32 hash, __u32 table_size)
{
	return (__u32)(((__u64)hash * table_size) >> 32);
}

static __always_inline __u32 flow_hash(const struct packet_v4 *pkt)
{
	return jhash_3words(pkt->ip->saddr, pkt->ip->daddr, pkt->ports_word,
			    LB_FLOW_HASH_SEED + pkt->ip->protocol);
}

/*
 * The backend of the flow: the tracked one while it is active, otherwise
 * the owner of the flow's slot in the VIP's Maglev table (then tracked).
 * A TCP SYN starts a new connection, so it always follows the table, even
 * when an earlier connection with the same 5-tuple is still tracked.
 */
static __always_inline const struct backend_info *
pick_backend(const struct vip_info *vip, const struct flow_key_v4 *flow, const struct packet_v4 *pkt,
	     __u64 now, __u32 *backend_id, enum flow_verdict *verdict)
{
	struct flow_state *tracked, state = {};
	struct backend_info *be;
	__u32 slot, *owner;
	void *table;

	*verdict = FLOW_NEW;
	tracked = pkt->new_tcp ? NULL : bpf_map_lookup_elem(&flows_v4, flow);
	if (tracked) {
		*backend_id = tracked->backend_id;
		be = bpf_map_lookup_elem(&backends, backend_id);
		if (be && (be->flags & LB_BACKEND_F_ACTIVE)) {
			*verdict = FLOW_TRACKED;
			if (now - tracked->last_seen > LB_FLOW_TOUCH_JIFFIES)
				tracked->last_seen = now;
			if (pkt->end_tcp)
				tracked->flags |= LB_FLOW_F_CLOSING;
			return be;
		}
		*verdict = FLOW_MOVED;
	}

	table = bpf_map_lookup_elem(&maglev_tables, &vip->table_id);
	if (!table)
		return NULL;
	slot = table_slot(flow_hash(pkt), vip->table_size);
	owner = bpf_map_lookup_elem(table, &slot);
	if (!owner)
		return NULL;
	*backend_id = *owner;
	be = bpf_map_lookup_elem(&backends, backend_id);
	if (!be || !(be->flags & LB_BACKEND_F_ACTIVE))
		return NULL;

	state.backend_id = *backend_id;
	state.flags = pkt->end_tcp ? LB_FLOW_F_CLOSING : 0;
	state.last_seen = now;
	bpf_map_update_elem(&flows_v4, flow, &state, BPF_ANY);
	return be;
}

static __always_inline int balance_v4(struct xdp_md *ctx, struct ethhdr *eth, void *data_end)
{
	const struct backend_info *be;
	const struct vip_info *vip;
	struct vip_key_v4 vip_key = {};
	struct flow_key_v4 flow = {};
	struct packet_v4 pkt;
	enum flow_verdict verdict;
	enum lb_reason reason;
	__u32 backend_id;
	__u64 now;

	reason = parse_ipv4_l4(eth, data_end, &pkt);
	if (reason != LB_REASON_MAX)
		return count_reason(reason, XDP_PASS);

	vip_key.addr = pkt.ip->daddr;
	vip_key.port = pkt.dport;
	vip_key.proto = pkt.ip->protocol;
	vip = bpf_map_lookup_elem(&vips_v4, &vip_key);
	if (!vip)
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	now = bpf_jiffies64();
	if (kill_switch_tripped(now))
		return count_reason(LB_REASON_KILL_SWITCH, XDP_PASS);

	flow.saddr = pkt.ip->saddr;
	flow.daddr = pkt.ip->daddr;
	flow.sport = pkt.sport;
	flow.dport = pkt.dport;
	flow.proto = vip_key.proto;
	be = pick_backend(vip, &flow, &pkt, now, &backend_id, &verdict);
	if (!be)
		return count_reason(LB_REASON_NO_BACKEND, XDP_DROP);

	count_traffic(&vip_stats, vip->vip_id, pkt.ip_len, verdict);
	count_traffic(&backend_stats, backend_id, pkt.ip_len, verdict);

	if (be->forward == LB_FORWARD_IPIP) {
		if (encap_ipip(ctx, be))
			return count_reason(LB_REASON_ENCAP_FAILED, XDP_DROP);
		return transmit(ctx, be);
	}
	return forward_l2dsr(ctx, eth, be);
}

SEC("xdp")
int xdp_balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth;

	switch (parse_eth(data, data_end, &eth)) {
	case bpf_htons(ETH_P_IP):
		return balance_v4(ctx, eth, data_end);
	case bpf_htons(ETH_P_IPV6):
		return count_reason(LB_REASON_IPV6, XDP_PASS);
	default:
		return count_reason(LB_REASON_NOT_IP, XDP_PASS);
	}
}

/*
 * The data plane's clock for the control plane: run once with
 * BPF_PROG_TEST_RUN, it writes jiffies into the first 8 bytes of the packet.
 */
SEC("xdp")
int lb_clock(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *out = data;

	if ((void *)(out + 1) > data_end)
		return XDP_ABORTED;
	*out = bpf_jiffies64();
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
