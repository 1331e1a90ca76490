/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flows: their hash (which Maglev slot a new flow takes) and their tracking
 * (which backend an existing flow keeps).
 */
#ifndef LBCTL_FLOW_H
#define LBCTL_FLOW_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "jhash.h"
#include "maps.h"
#include "parse.h"

/* Fixed, so that every balancer given the same backends picks the same one
 * for a flow; src/dataplane/flow-hash.ts computes the same values. Inputs
 * are taken as numbers (host order), so the hash does not depend on the
 * machine's byte order. */
#define LB_FLOW_HASH_SEED 0x4c42u

/*
 * Tracked flows note their activity (drains read it) at most once per this
 * many jiffies: about a second at the usual HZ. The clock is jiffies because
 * it is a plain load; the ktime helpers cost ~50 ns per packet on these hosts.
 */
#define LB_FLOW_TOUCH_JIFFIES 256

/* How the flow got its backend, for the counters. */
enum flow_verdict {
	FLOW_TRACKED, /* connection tracking knew it */
	FLOW_NEW,     /* first packet (or a SYN): from the Maglev table */
	FLOW_MOVED,   /* tracked, but its backend is gone: from the table */
};

static __always_inline __u32 ports_word(__be16 sport, __be16 dport)
{
	return ((__u32)bpf_ntohs(sport) << 16) | bpf_ntohs(dport);
}

static __always_inline __u32 flow_hash_v4(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __u8 proto)
{
	return jhash_3words(bpf_ntohl(saddr), bpf_ntohl(daddr), ports_word(sport, dport), LB_FLOW_HASH_SEED + proto);
}

static __always_inline __u32 flow_hash_v6(const __be32 *saddr, const __be32 *daddr, __be16 sport, __be16 dport, __u8 proto)
{
	__u32 h;

	h = jhash_3words(bpf_ntohl(saddr[0]), bpf_ntohl(saddr[1]), bpf_ntohl(saddr[2]), LB_FLOW_HASH_SEED + proto);
	h = jhash_3words(bpf_ntohl(saddr[3]), bpf_ntohl(daddr[0]), bpf_ntohl(daddr[1]), h);
	return jhash_3words(bpf_ntohl(daddr[2]), bpf_ntohl(daddr[3]), ports_word(sport, dport), h);
}

/* Maps the flow hash onto [0, table_size) without a division. */
static __always_inline __u32 table_slot(__u32 hash, __u32 table_size)
{
	return (__u32)(((__u64)hash * table_size) >> 32);
}

static __always_inline struct backend_info *active_backend(__u32 id)
{
	struct backend_info *be = bpf_map_lookup_elem(&backends, &id);

	return be && (be->flags & LB_BACKEND_F_ACTIVE) ? be : NULL;
}

/*
 * The tracked backend of a flow, while it is active. A TCP SYN starts a new
 * connection, so it is never looked up: it follows the table even when an
 * earlier connection with the same 5-tuple is still tracked. *entry is the
 * entry of a flow whose backend is gone, for track() to rewrite.
 */
static __always_inline struct backend_info *tracked_backend(void *flows, const void *key, const struct packet *pkt,
							    __u64 now, __u32 *backend_id, enum flow_verdict *verdict,
							    struct flow_state **entry)
{
	struct flow_state *tracked;
	struct backend_info *be;

	*verdict = FLOW_NEW;
	*entry = NULL;
	if (pkt->new_tcp)
		return NULL;
	tracked = bpf_map_lookup_elem(flows, key);
	if (!tracked)
		return NULL;
	be = active_backend(tracked->backend_id);
	if (!be) {
		*verdict = FLOW_MOVED;
		*entry = tracked;
		return NULL;
	}
	*verdict = FLOW_TRACKED;
	*backend_id = tracked->backend_id;
	if (now - tracked->last_seen > LB_FLOW_TOUCH_JIFFIES)
		tracked->last_seen = now;
	if (pkt->end_tcp)
		tracked->flags |= LB_FLOW_F_CLOSING;
	return be;
}

/* The tracked backend of a flow, without noting any activity (ICMP errors). */
static __always_inline struct backend_info *peek_tracked(void *flows, const void *key, __u32 *backend_id)
{
	struct flow_state *tracked = bpf_map_lookup_elem(flows, key);

	if (!tracked)
		return NULL;
	*backend_id = tracked->backend_id;
	return active_backend(tracked->backend_id);
}

/* The owner of the flow's slot in the VIP's Maglev table. */
static __always_inline struct backend_info *table_backend(const struct vip_info *vip, __u32 hash, __u32 *backend_id)
{
	__u32 slot, *owner;
	void *table;

	table = bpf_map_lookup_elem(&maglev_tables, &vip->table_id);
	if (!table)
		return NULL;
	slot = table_slot(hash, vip->table_size);
	owner = bpf_map_lookup_elem(table, &slot);
	if (!owner)
		return NULL;
	*backend_id = *owner;
	return active_backend(*owner);
}

/*
 * Remembers the flow's backend. A RST of an untracked flow is not worth it.
 *
 * The entry of a moved flow is rewritten in place: a map update takes a new
 * element off the LRU's free list and puts the old one back, 500-600 ns per
 * packet against ~65 ns for a lookup (BPF_PROG_TEST_RUN on the development
 * hosts). A SYN does not look its tuple up for the same saving: that lookup
 * would cost every SYN of a tuple never seen, the common case, ~10% more.
 */
static __always_inline void track(void *flows, const void *key, struct flow_state *entry, const struct packet *pkt,
				  __u32 backend_id, __u64 now)
{
	struct flow_state state = {};

	if (pkt->rst_tcp)
		return;
	state.backend_id = backend_id;
	state.flags = pkt->end_tcp ? LB_FLOW_F_CLOSING : 0;
	state.last_seen = now;
	if (entry) {
		entry->backend_id = state.backend_id;
		entry->flags = state.flags;
		entry->last_seen = state.last_seen;
		return;
	}
	bpf_map_update_elem(flows, key, &state, BPF_ANY);
}

#endif /* LBCTL_FLOW_H */
