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

/*
 * How long a SYN's note stands for the packets that follow it: longer than
 * any handshake (the client's ACK follows the server's SYN-ACK, which is
 * retransmitted for about a minute at most), whatever HZ: 65 s at 1000.
 */
#define LB_SYN_NOTE_JIFFIES 65536

/* How the flow got its backend, for the counters. */
enum flow_verdict {
	FLOW_TRACKED, /* connection tracking knew it, or the note of its SYN */
	FLOW_NEW,     /* a SYN, or the first packet of a flow without one: from the Maglev table */
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

/*
 * The hash of a client's address alone, for VIPs that keep a client on one
 * backend (LB_VIP_F_HASH_SOURCE); src/dataplane/flow-hash.ts computes the
 * same values.
 */
#define LB_SOURCE_HASH_SEED 0x5348u

static __always_inline __u32 source_hash_v4(__be32 saddr)
{
	return jhash_3words(bpf_ntohl(saddr), 0, 0, LB_SOURCE_HASH_SEED);
}

static __always_inline __u32 source_hash_v6(const __be32 *saddr)
{
	__u32 h = jhash_3words(bpf_ntohl(saddr[0]), bpf_ntohl(saddr[1]), bpf_ntohl(saddr[2]), LB_SOURCE_HASH_SEED);

	return jhash_3words(bpf_ntohl(saddr[3]), 0, 0, h);
}

/* The hash of a flow by its key, of either family (`v6` is a constant where it is inlined). */
static __always_inline __u32 flow_key_hash(const void *key, bool v6)
{
	if (v6) {
		const struct flow_key_v6 *k = key;

		return flow_hash_v6(k->saddr, k->daddr, k->sport, k->dport, k->proto);
	}
	const struct flow_key_v4 *k = key;

	return flow_hash_v4(k->saddr, k->daddr, k->sport, k->dport, k->proto);
}

/*
 * What picks a tunnelled flow's outer source in a range and its outer IPv6
 * flow label: the same for every packet of the flow, and cheap, since
 * tracked packets compute it. IPv4: the flow hash. IPv6: one round over the
 * addresses folded to a word each (the flow hash takes three).
 * src/dataplane/flow-hash.ts (encapHash) computes the same.
 */
static __always_inline __u32 encap_hash(const void *key, bool v6)
{
	if (v6) {
		const struct flow_key_v6 *k = key;
		__u32 s = k->saddr[0] ^ k->saddr[1] ^ k->saddr[2] ^ k->saddr[3];
		__u32 d = k->daddr[0] ^ k->daddr[1] ^ k->daddr[2] ^ k->daddr[3];

		return jhash_3words(bpf_ntohl(s), bpf_ntohl(d), ports_word(k->sport, k->dport), LB_FLOW_HASH_SEED + k->proto);
	}
	return flow_key_hash(key, false);
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
 * A tracked flow's packet goes to its backend: the flow notes its activity
 * (drains read it) and whether the client is closing.
 */
static __always_inline void touch(struct flow_state *tracked, const struct packet *pkt, __u64 now)
{
	if (now - tracked->last_seen > LB_FLOW_TOUCH_JIFFIES)
		tracked->last_seen = now;
	if (pkt->end_tcp)
		tracked->flags |= LB_FLOW_F_CLOSING;
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

/*
 * The owner of the flow's slot in the VIP's Maglev table: a 32-bit element
 * per slot (wide), or 16-bit entries two to an element, the even slot in
 * the low half (src/dataplane/balancer.ts packs them).
 */
static __always_inline struct backend_info *table_backend(const struct vip_info *vip, __u32 hash, bool wide,
							  __u32 *backend_id)
{
	__u32 slot, key, *owner;
	void *table;

	table = bpf_map_lookup_elem(&maglev_tables, &vip->table_id);
	if (!table)
		return NULL;
	slot = table_slot(hash, vip->table_size);
	key = wide ? slot : slot >> 1;
	owner = bpf_map_lookup_elem(table, &key);
	if (!owner)
		return NULL;
	*backend_id = wide ? *owner : (*owner >> ((slot & 1) * 16)) & 0xffff;
	return active_backend(*backend_id);
}

/* Notes where a SYN went: its flow's next packets follow it there. */
static __always_inline void note_syn(__u32 hash, __u32 backend_id, __u64 now)
{
	__u32 slot = hash & (LB_SYN_NOTES - 1);
	struct syn_note *note = bpf_map_lookup_elem(&syn_notes, &slot);

	if (!note)
		return;
	note->flow = ((__u64)hash << 32) | backend_id;
	note->seen = now;
}

/*
 * The backend of the SYN noted for this flow since `since` (jiffies), if
 * it is still active: where the connection the client opened with that SYN
 * lives, whatever the table says now. The note is used up: the flow is
 * tracked from now on, and any later note of its tuple is a newer SYN's.
 */
static __always_inline struct backend_info *take_noted_syn(__u32 hash, __u64 since, __u32 *backend_id)
{
	__u32 slot = hash & (LB_SYN_NOTES - 1);
	struct syn_note *note = bpf_map_lookup_elem(&syn_notes, &slot);
	struct backend_info *be;

	if (!note || note->flow >> 32 != hash || (__s64)(note->seen - since) < 0)
		return NULL;
	*backend_id = (__u32)note->flow;
	be = active_backend(*backend_id);
	if (be)
		note->flow = 0;
	return be;
}

/*
 * Could this packet belong to a new connection on the tuple of a tracked
 * flow? A client reuses a port once its connection is over: after its FIN
 * or RST, or (a connection the server reset) after a silence. Such a
 * tracked flow's packets first look for a SYN noted since its last packet;
 * the others (nearly all) go straight to the tracked backend.
 */
static __always_inline bool tuple_may_be_reused(const struct flow_state *tracked, const struct packet *pkt, __u64 now)
{
	return pkt->proto == IPPROTO_TCP &&
	       ((tracked->flags & LB_FLOW_F_CLOSING) || now - tracked->last_seen > LB_FLOW_TOUCH_JIFFIES);
}

/*
 * Tracking starts at the first packet after the SYN: a SYN only consults
 * the table (a SYN costs no map update, and spoofed SYN floods cannot evict
 * tracked flows) and notes its backend for the packets that follow it
 * (note_syn). A RST of an untracked flow is not worth tracking.
 *
 * A tracked flow's entry (a moved flow, a reused tuple) is rewritten in
 * place: a map update takes a new element off the LRU's free list and puts
 * the old one back, 500-600 ns per packet against ~65 ns for a lookup
 * (BPF_PROG_TEST_RUN on the development hosts).
 */
static __always_inline void track(void *flows, const void *key, struct flow_state *entry, const struct packet *pkt,
				  __u32 backend_id, __u32 hash, __u64 now)
{
	struct flow_state state = {};

	if (pkt->new_tcp) {
		note_syn(hash, backend_id, now);
		return;
	}
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
