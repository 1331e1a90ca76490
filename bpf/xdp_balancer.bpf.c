// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdp_balancer: Maglev load balancing with direct server return, for IPv4
 * and IPv6.
 *
 * A packet to a VIP keeps the backend its flow already has (connection
 * tracking), or gets one from the VIP's Maglev table, and leaves towards it
 * either with a rewritten destination MAC (l2dsr) or inside an outer IP
 * header (ipip). Echo requests to VIP addresses are answered, and ICMP
 * too-big errors about VIP flows go to the backend that owns the flow.
 * Everything else goes to the kernel untouched; lib/abi.h lists the fates.
 */
#include <linux/bpf.h>
#include <linux/icmpv6.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lib/abi.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/flow.h"
#include "lib/forward.h"
#include "lib/icmp.h"
#include "lib/vip.h"

static __always_inline int count_reason(enum lb_reason reason, int action)
{
	__u32 key = reason;
	__u64 *count = bpf_map_lookup_elem(&reasons, &key);

	if (count)
		*count += 1;
	return action;
}

/* Never loaded (nothing calls it): it keeps enum lb_reason in the object's
 * BTF, where test/abi.test.ts checks the names the control plane uses. */
__u32 lb_reason_is_known(enum lb_reason reason)
{
	return reason < LB_REASON_MAX;
}

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
static __always_inline bool kill_switch_tripped(const struct lb_settings *cfg, __u64 now)
{
	return now > cfg->kill_switch_deadline;
}

/*
 * Why a packet to a VIP must not be balanced, or LB_REASON_MAX: the
 * kill-switch (fail open), an IPv4 header whose checksum is wrong. Only
 * packets to VIPs pay for the checksum: the kernel checks the rest.
 */
static __always_inline enum lb_reason vip_packet_refused(struct xdp_md *ctx, const struct packet *pkt,
							const struct lb_settings *cfg, __u64 now, bool v6)
{
	const struct iphdr *ip = pkt->l3;

	if (kill_switch_tripped(cfg, now))
		return LB_REASON_KILL_SWITCH;
	if (v6)
		return LB_REASON_MAX;
	if (ip->ihl == 5 ? !ipv4_short_header_valid(ip) : !ipv4_long_header_valid(ctx, pkt->l2_len, ip->ihl * 4))
		return LB_REASON_MALFORMED;
	return LB_REASON_MAX;
}

/*
 * Why a packet the balancer does not handle (a protocol or ICMP type of no
 * VIP) passes: unsupported when it is addressed to a VIP's address, not a
 * VIP otherwise (neighbour discovery, GRE between other hosts...).
 */
static __always_inline enum lb_reason unsupported_v4(const struct iphdr *ip)
{
	return bpf_map_lookup_elem(&vip_addrs_v4, &ip->daddr) ? LB_REASON_L4_UNSUPPORTED : LB_REASON_NOT_VIP;
}

static __always_inline enum lb_reason unsupported_v6(const struct ipv6hdr *ip6)
{
	return bpf_map_lookup_elem(&vip_addrs_v6, &ip6->daddr) ? LB_REASON_L4_UNSUPPORTED : LB_REASON_NOT_VIP;
}

/*
 * Sends a packet towards its backend. An encapsulated packet that would
 * exceed the path's MTU is answered with ICMP too-big instead, so the
 * sender's path MTU discovery works through the balancer; one that may be
 * fragmented cannot be (XDP does not fragment) and is dropped, counted.
 */
static __always_inline int send_to_backend(struct xdp_md *ctx, const struct packet *pkt,
					   const struct backend_info *be, bool inner_v6, bool may_answer, __u32 hash)
{
	__u16 overhead;

	if (be->forward != LB_FORWARD_IPIP)
		return forward_l2dsr(ctx, pkt->eth, be);

	overhead = encap_overhead(be);
	if (be->mtu && pkt->ip_len + overhead > be->mtu) {
		/* Never an ICMP error about an ICMP error (RFC 1122 3.2.2). */
		int err = !pkt->df || !may_answer ? -1
			: inner_v6 ? reply_too_big_v6(ctx, pkt, be->mtu - overhead)
				   : reply_too_big_v4(ctx, pkt, be->mtu - overhead);

		if (err)
			return count_reason(LB_REASON_TOO_BIG_DROPPED, XDP_DROP);
		return count_reason(LB_REASON_TOO_BIG_REPLIED, XDP_TX);
	}
	if (encapsulate(ctx, pkt, be, inner_v6, hash))
		return count_reason(LB_REASON_ENCAP_FAILED, XDP_DROP);
	return transmit(ctx, be);
}

/*
 * An ICMP error about a VIP flow, to the flow's backend. Counted as
 * forwarded only when it leaves: one too big for the tunnel is dropped and
 * counted as such, never answered (no error about an error).
 */
static __always_inline int forward_icmp_error(struct xdp_md *ctx, const struct packet *pkt,
					      const struct backend_info *be, bool inner_v6, const void *flow)
{
	int action = send_to_backend(ctx, pkt, be, inner_v6, false, encap_needs_hash(be) ? encap_hash(flow, inner_v6) : 0);

	if (action == XDP_TX || action == XDP_REDIRECT)
		count_reason(LB_REASON_ICMP_ERROR_FORWARDED, 0);
	return action;
}

/*
 * A tracked flow whose connection may be over (tuple_may_be_reused) and a
 * SYN noted since its last packet: the client opened a new connection on
 * the tuple, and its packets follow that SYN to its backend.
 */
static __always_inline void follow_reused_tuple(struct flow_state *tracked, __u32 hash, __u64 now)
{
	__u64 since = now - LB_SYN_NOTE_JIFFIES;
	__u32 backend_id;

	if ((__s64)(tracked->last_seen - since) > 0)
		since = tracked->last_seen;
	if (!take_noted_syn(hash, since, &backend_id))
		return;
	tracked->backend_id = backend_id;
	tracked->flags = 0;
	tracked->last_seen = now;
}

/*
 * The backend of a tracked flow's packet, if still active: its own, or,
 * for a tuple whose connection may be over, that of a SYN of a new
 * connection on it. NULL: the flow is placed again (place_flow).
 */
static __always_inline struct backend_info *tracked_backend(struct flow_state *tracked, const struct packet *pkt,
							    const void *key, __u64 now, bool v6)
{
	if (tuple_may_be_reused(tracked, pkt, now))
		follow_reused_tuple(tracked, flow_key_hash(key, v6), now);
	return active_backend(tracked->backend_id);
}

/* A packet of a tracked flow whose backend is active: to that backend, whatever the table says now. */
static __always_inline int forward_tracked(struct xdp_md *ctx, const struct packet *pkt, struct flow_state *tracked,
					   const struct backend_info *be, const void *key, __u64 now, bool v6)
{
	touch(tracked, pkt, now);
	count_traffic(&vip_stats, be->vip_id, pkt->ip_len, FLOW_TRACKED);
	count_traffic(&backend_stats, tracked->backend_id, pkt->ip_len, FLOW_TRACKED);
	return send_to_backend(ctx, pkt, be, v6, true, encap_needs_hash(be) ? encap_hash(key, v6) : 0);
}

/*
 * A flow without an active tracked backend: a SYN (a new connection), the
 * packet after a SYN (the SYN's backend, noted), the first packet of a
 * flow without either (the table's choice: a UDP flow, a TCP flow picked
 * up mid-connection), or a tracked flow whose backend is gone (moved: the
 * table's choice; its entry, `tracked`, is rewritten in place). `hash`
 * is the flow's, `slot_hash` what picks its slot in the VIP's table (the
 * same, or its client's for a VIP that hashes sources only).
 */
static __always_inline int place_flow(struct xdp_md *ctx, const struct packet *pkt, const struct lb_settings *cfg,
				      const struct vip_info *vip, void *flows, const void *key, struct flow_state *tracked,
				      __u32 hash, __u32 slot_hash, __u64 now, bool v6)
{
	enum flow_verdict verdict = tracked ? FLOW_MOVED : FLOW_NEW;
	struct backend_info *be = NULL;
	__u32 backend_id;

	if (!tracked && !pkt->new_tcp && pkt->proto == IPPROTO_TCP) {
		be = take_noted_syn(hash, now - LB_SYN_NOTE_JIFFIES, &backend_id);
		if (be)
			verdict = FLOW_TRACKED;
	}
	if (!be)
		be = table_backend(vip, slot_hash, cfg->flags & LB_SETTINGS_F_WIDE_TABLES, &backend_id);
	if (!be)
		return count_reason(LB_REASON_NO_BACKEND, XDP_DROP);
	track(flows, key, tracked, pkt, backend_id, hash, now);
	count_traffic(&vip_stats, vip->vip_id, pkt->ip_len, verdict);
	count_traffic(&backend_stats, backend_id, pkt->ip_len, verdict);
	/* IPv4's tunnel hash is the flow hash, already at hand. */
	return send_to_backend(ctx, pkt, be, v6, true, !encap_needs_hash(be) ? 0 : v6 ? encap_hash(key, true) : hash);
}

/* What picks a flow's slot in the VIP's table (ICMP errors about the flow go where it went). */
static __always_inline __u32 slot_hash_v4(const struct vip_info *vip, const struct flow_key_v4 *flow)
{
	if (vip->flags & LB_VIP_F_HASH_SOURCE)
		return source_hash_v4(flow->saddr);
	return flow_hash_v4(flow->saddr, flow->daddr, flow->sport, flow->dport, flow->proto);
}

static __always_inline __u32 slot_hash_v6(const struct vip_info *vip, const struct flow_key_v6 *flow)
{
	if (vip->flags & LB_VIP_F_HASH_SOURCE)
		return source_hash_v6(flow->saddr);
	return flow_hash_v6(flow->saddr, flow->daddr, flow->sport, flow->dport, flow->proto);
}

/*
 * An ICMP error quotes the packet that caused it: for a VIP flow, a packet
 * a backend sent (from the VIP) to a client. The flow is client -> VIP.
 */
struct quoted_flow_v4 {
	struct iphdr ip;
	__be16 sport; /* the VIP's port */
	__be16 dport; /* the client's */
	__u32 rest;   /* errors quote at least 8 bytes after the IP header */
};

struct quoted_flow_v6 {
	struct ipv6hdr ip6;
	__be16 sport;
	__be16 dport;
	__u32 rest;
};

static __always_inline int icmp_v4(struct xdp_md *ctx, struct packet *pkt, void *data_end, const struct lb_settings *cfg)
{
	struct iphdr *ip = pkt->l3;
	struct icmphdr *icmp = pkt->l4;
	struct quoted_flow_v4 *quoted = (void *)(icmp + 1);
	struct flow_key_v4 flow = {};
	struct backend_info *be;
	struct vip_info *vip;
	__u32 backend_id;

	if ((void *)(icmp + 1) > data_end || (void *)(icmp + 1) > pkt->l3 + pkt->ip_len)
		return count_reason(LB_REASON_L4_TRUNCATED, XDP_PASS);
	if (ip->ihl != 5 || !ipv4_short_header_valid(ip))
		return count_reason(LB_REASON_MALFORMED, XDP_PASS);
	if (icmp->type == ICMP_ECHO) {
		if (!bpf_map_lookup_elem(&vip_addrs_v4, &ip->daddr))
			return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
		/* Fail open here too: a balancer that is not balancing must not look alive. */
		if (kill_switch_tripped(cfg, bpf_jiffies64()))
			return count_reason(LB_REASON_KILL_SWITCH, XDP_PASS);
		if (reply_echo_v4(ctx, pkt, data_end))
			return count_reason(LB_REASON_MALFORMED, XDP_PASS);
		return count_reason(LB_REASON_ICMP_ECHO_REPLIED, XDP_TX);
	}
	if (icmp->type != ICMP_DEST_UNREACH || icmp->code != ICMP_FRAG_NEEDED)
		return count_reason(unsupported_v4(ip), XDP_PASS);
	if ((void *)(quoted + 1) > data_end || (void *)(quoted + 1) > pkt->l3 + pkt->ip_len)
		return count_reason(LB_REASON_L4_TRUNCATED, XDP_PASS);
	/* About a packet the VIP sent, and addressed to that VIP. */
	if (quoted->ip.ihl != 5 || quoted->ip.version != 4 || quoted->ip.saddr != ip->daddr)
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);

	vip = find_vip_v4(quoted->ip.saddr, quoted->sport, quoted->ip.protocol, cfg);
	if (!vip)
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	if (kill_switch_tripped(cfg, bpf_jiffies64()))
		return count_reason(LB_REASON_KILL_SWITCH, XDP_PASS);

	flow.saddr = quoted->ip.daddr;
	flow.daddr = quoted->ip.saddr;
	flow.sport = quoted->dport;
	flow.dport = quoted->sport;
	flow.proto = quoted->ip.protocol;
	be = peek_tracked(&flows_v4, &flow, &backend_id);
	if (!be)
		be = table_backend(vip, slot_hash_v4(vip, &flow),
				   cfg->flags & LB_SETTINGS_F_WIDE_TABLES, &backend_id);
	if (!be)
		return count_reason(LB_REASON_NO_BACKEND, XDP_DROP);
	return forward_icmp_error(ctx, pkt, be, false, &flow);
}

static __always_inline int icmp_v6(struct xdp_md *ctx, struct packet *pkt, void *data_end, const struct lb_settings *cfg)
{
	struct ipv6hdr *ip6 = pkt->l3;
	struct icmp6hdr *icmp6 = pkt->l4;
	struct quoted_flow_v6 *quoted = (void *)(icmp6 + 1);
	struct flow_key_v6 flow = {};
	struct backend_info *be;
	struct vip_info *vip;
	__u32 backend_id;

	if ((void *)(icmp6 + 1) > data_end || (void *)(icmp6 + 1) > pkt->l3 + pkt->ip_len)
		return count_reason(LB_REASON_L4_TRUNCATED, XDP_PASS);
	if (icmp6->icmp6_type == ICMPV6_ECHO_REQUEST) {
		if (!bpf_map_lookup_elem(&vip_addrs_v6, &ip6->daddr))
			return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
		/* Fail open here too: a balancer that is not balancing must not look alive. */
		if (kill_switch_tripped(cfg, bpf_jiffies64()))
			return count_reason(LB_REASON_KILL_SWITCH, XDP_PASS);
		if (reply_echo_v6(pkt, data_end))
			return count_reason(LB_REASON_MALFORMED, XDP_PASS);
		return count_reason(LB_REASON_ICMP_ECHO_REPLIED, XDP_TX);
	}
	/* Neighbour discovery and the rest are the kernel's. */
	if (icmp6->icmp6_type != ICMPV6_PKT_TOOBIG)
		return count_reason(unsupported_v6(ip6), XDP_PASS);
	if ((void *)(quoted + 1) > data_end || (void *)(quoted + 1) > pkt->l3 + pkt->ip_len)
		return count_reason(LB_REASON_L4_TRUNCATED, XDP_PASS);
	if (quoted->ip6.version != 6 || !ipv6_addr_equal(&quoted->ip6.saddr, &ip6->daddr))
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	if (quoted->ip6.nexthdr != IPPROTO_TCP && quoted->ip6.nexthdr != IPPROTO_UDP)
		return count_reason(LB_REASON_L4_UNSUPPORTED, XDP_PASS);

	vip = find_vip_v6(&quoted->ip6.saddr, quoted->sport, quoted->ip6.nexthdr, cfg);
	if (!vip)
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	if (kill_switch_tripped(cfg, bpf_jiffies64()))
		return count_reason(LB_REASON_KILL_SWITCH, XDP_PASS);

	__builtin_memcpy(flow.saddr, &quoted->ip6.daddr, sizeof(flow.saddr));
	__builtin_memcpy(flow.daddr, &quoted->ip6.saddr, sizeof(flow.daddr));
	flow.sport = quoted->dport;
	flow.dport = quoted->sport;
	flow.proto = quoted->ip6.nexthdr;
	be = peek_tracked(&flows_v6, &flow, &backend_id);
	if (!be)
		be = table_backend(vip, slot_hash_v6(vip, &flow),
				   cfg->flags & LB_SETTINGS_F_WIDE_TABLES, &backend_id);
	if (!be)
		return count_reason(LB_REASON_NO_BACKEND, XDP_DROP);
	return forward_icmp_error(ctx, pkt, be, true, &flow);
}

static __always_inline int balance_v4(struct xdp_md *ctx, struct packet *pkt, void *data_end, const struct lb_settings *cfg)
{
	struct flow_state *tracked = NULL;
	struct flow_key_v4 flow = {};
	struct backend_info *be;
	struct vip_info *vip;
	enum lb_reason reason;
	struct iphdr *ip;
	__u32 hash;
	__u64 now;

	reason = parse_ipv4(ctx, pkt, data_end);
	if (reason == LB_REASON_L4_UNSUPPORTED)
		reason = unsupported_v4(pkt->l3);
	if (reason != LB_REASON_MAX)
		return count_reason(reason, XDP_PASS);
	if (pkt->proto == IPPROTO_ICMP)
		return icmp_v4(ctx, pkt, data_end, cfg);

	ip = pkt->l3;
	if (!vip_address_possible_v4(ip->daddr))
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	flow.saddr = ip->saddr;
	flow.daddr = ip->daddr;
	flow.sport = pkt->sport;
	flow.dport = pkt->dport;
	flow.proto = pkt->proto;
	/* Tracked flows first: their packets need no VIP lookup. A SYN starts a
	 * new connection and is never tracked: it does not look. */
	if (!pkt->new_tcp) {
		tracked = bpf_map_lookup_elem(&flows_v4, &flow);
		if (tracked) {
			now = bpf_jiffies64();
			reason = vip_packet_refused(ctx, pkt, cfg, now, false);
			if (reason != LB_REASON_MAX)
				return count_reason(reason, XDP_PASS);
			be = tracked_backend(tracked, pkt, &flow, now, false);
			if (be)
				return forward_tracked(ctx, pkt, tracked, be, &flow, now, false);
		}
	}

	vip = find_vip_v4(ip->daddr, pkt->dport, pkt->proto, cfg);
	if (!vip)
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	now = bpf_jiffies64();
	reason = vip_packet_refused(ctx, pkt, cfg, now, false);
	if (reason != LB_REASON_MAX)
		return count_reason(reason, XDP_PASS);
	hash = flow_hash_v4(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto);
	return place_flow(ctx, pkt, cfg, vip, &flows_v4, &flow, tracked, hash,
			  vip->flags & LB_VIP_F_HASH_SOURCE ? source_hash_v4(flow.saddr) : hash, now, false);
}

static __always_inline int balance_v6(struct xdp_md *ctx, struct packet *pkt, void *data_end, const struct lb_settings *cfg)
{
	struct flow_state *tracked = NULL;
	struct flow_key_v6 flow = {};
	struct backend_info *be;
	struct ipv6hdr *ip6;
	struct vip_info *vip;
	enum lb_reason reason;
	__u32 hash;
	__u64 now;

	reason = parse_ipv6(pkt, data_end);
	if (reason == LB_REASON_L4_UNSUPPORTED)
		reason = unsupported_v6(pkt->l3);
	if (reason != LB_REASON_MAX)
		return count_reason(reason, XDP_PASS);
	if (pkt->proto == IPPROTO_ICMPV6)
		return icmp_v6(ctx, pkt, data_end, cfg);

	ip6 = pkt->l3;
	if (!vip_address_possible_v6(ip6->daddr.in6_u.u6_addr32))
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	__builtin_memcpy(flow.saddr, &ip6->saddr, sizeof(flow.saddr));
	__builtin_memcpy(flow.daddr, &ip6->daddr, sizeof(flow.daddr));
	flow.sport = pkt->sport;
	flow.dport = pkt->dport;
	flow.proto = pkt->proto;
	if (!pkt->new_tcp) {
		tracked = bpf_map_lookup_elem(&flows_v6, &flow);
		if (tracked) {
			now = bpf_jiffies64();
			reason = vip_packet_refused(ctx, pkt, cfg, now, true);
			if (reason != LB_REASON_MAX)
				return count_reason(reason, XDP_PASS);
			be = tracked_backend(tracked, pkt, &flow, now, true);
			if (be)
				return forward_tracked(ctx, pkt, tracked, be, &flow, now, true);
		}
	}

	vip = find_vip_v6(&ip6->daddr, pkt->dport, pkt->proto, cfg);
	if (!vip)
		return count_reason(LB_REASON_NOT_VIP, XDP_PASS);
	now = bpf_jiffies64();
	reason = vip_packet_refused(ctx, pkt, cfg, now, true);
	if (reason != LB_REASON_MAX)
		return count_reason(reason, XDP_PASS);
	hash = flow_hash_v6(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto);
	return place_flow(ctx, pkt, cfg, vip, &flows_v6, &flow, tracked, hash,
			  vip->flags & LB_VIP_F_HASH_SOURCE ? source_hash_v6(flow.saddr) : hash, now, true);
}

/*
 * Is the frame this node's to balance? A switch that does not know a
 * destination MAC floods the frame to every port: each node of a fleet
 * would balance the same packet. Unicast to another MAC is passed, unless
 * the control plane has not said which MAC is this node's (all zero).
 */
static __always_inline bool for_this_host(const struct ethhdr *eth, const struct lb_settings *cfg)
{
	__u32 mac_head = *(const __u32 *)cfg->mac;
	__u16 mac_tail = *(const __u16 *)(cfg->mac + 4);

	return !(mac_head | mac_tail) ||
	       (*(const __u32 *)eth->h_dest == mac_head && *(const __u16 *)(eth->h_dest + 4) == mac_tail);
}

SEC("xdp")
int xdp_balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	/* Not zeroed: the parsers set every field before it is read (the
	 * verifier would refuse otherwise), and this runs for every packet. */
	struct packet pkt;
	enum lb_reason reason;
	__u32 zero = 0;
	const struct lb_settings *cfg = bpf_map_lookup_elem(&settings, &zero);

	__be16 proto;

	if (!cfg) /* an array's only element: always there */
		return XDP_PASS;
	proto = parse_l2(data, data_end, &pkt, &reason);
	if (proto) {
		/* Broadcast and multicast frames are never a VIP's. */
		if (pkt.eth->h_dest[0] & 1)
			return count_reason(proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6) ? LB_REASON_NOT_VIP
													: LB_REASON_NOT_IP,
					    XDP_PASS);
		if (!for_this_host(pkt.eth, cfg))
			return count_reason(LB_REASON_NOT_FOR_THIS_HOST, XDP_PASS);
	}
	switch (proto) {
	case bpf_htons(ETH_P_IP):
		return balance_v4(ctx, &pkt, data_end, cfg);
	case bpf_htons(ETH_P_IPV6):
		return balance_v6(ctx, &pkt, data_end, cfg);
	default:
		return count_reason(reason, XDP_PASS);
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
