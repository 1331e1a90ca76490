/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of xdp_balancer. Sizes here are defaults: the control plane sets
 * max_entries before loading (lbctl start --max-vips, --max-backends,
 * --flow-table-size).
 */
#ifndef LBCTL_MAPS_H
#define LBCTL_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <linux/in6.h>
#include "abi.h"

#define LB_DEFAULT_MAX_VIPS 4096
#define LB_DEFAULT_MAX_BACKENDS 65536
#define LB_DEFAULT_FLOWS 1048576
#define LB_DEFAULT_TABLE_SIZE 65537
/* 64-bit words of vip_filter: 65536 bits. */
#define LB_VIP_FILTER_WORDS 1024

/* VIPs of each family. Elements are freed after an RCU grace period, so a
 * reader never sees a value half-way through being replaced. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LB_DEFAULT_MAX_VIPS);
	__type(key, struct vip_key_v4);
	__type(value, struct vip_info);
} vips_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LB_DEFAULT_MAX_VIPS);
	__type(key, struct vip_key_v6);
	__type(value, struct vip_info);
} vips_v6 SEC(".maps");

/*
 * Which destination addresses may carry a VIP: one bit per hash of the
 * address (lib/vip.h). A packet whose bit is clear is not for a VIP: it
 * passes after an array read the verifier inlines, without the VIP hash
 * lookup (a function call) that costs the others tens of nanoseconds.
 * src/dataplane/balancer.ts sets a bit before the first VIP entry of its
 * address is written and clears it after the last one is deleted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_VIP_FILTER_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} vip_filter SEC(".maps");

/* Addresses that carry at least one VIP: the balancer answers pings to them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LB_DEFAULT_MAX_VIPS);
	__type(key, __be32);
	__type(value, __u32);
} vip_addrs_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, LB_DEFAULT_MAX_VIPS);
	__type(key, struct in6_addr);
	__type(value, __u32);
} vip_addrs_v6 SEC(".maps");

/* One Maglev lookup table (slot -> backend id) per VIP. The control plane
 * swaps a whole table by replacing the inner map, which packets observe
 * atomically; tables of different VIPs may have different sizes. Mmapable:
 * the control plane fills a new table with one copy (src/dataplane/balancer.ts). */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
	__uint(max_entries, LB_DEFAULT_TABLE_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, LB_DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__array(values, struct maglev_table);
} maglev_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend_info);
} backends SEC(".maps");

/* Tracked flows, one table per family (shorter keys hash faster). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_DEFAULT_FLOWS);
	__type(key, struct flow_key_v4);
	__type(value, struct flow_state);
} flows_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_DEFAULT_FLOWS);
	__type(key, struct flow_key_v6);
	__type(value, struct flow_state);
} flows_v6 SEC(".maps");

/*
 * Recent SYNs, for the packets that follow them (lib/flow.h): a SYN is not
 * tracked, so the backend it was sent to is noted here, in the slot of its
 * flow hash, until another SYN takes the slot. Direct-mapped: a note costs
 * one store, and a flood of SYNs only overwrites notes, never tracked flows.
 */
struct syn_note {
	__u64 flow;     /* the flow hash (high 32 bits) and the backend id */
	__u64 seen;     /* jiffies */
};

#define LB_SYN_NOTES (1u << 18)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_SYN_NOTES);
	__type(key, __u32);
	__type(value, struct syn_note);
} syn_notes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_DEFAULT_MAX_VIPS);
	__type(key, __u32);
	__type(value, struct traffic_counters);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_DEFAULT_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct traffic_counters);
} backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_REASON_MAX);
	__type(key, __u32); /* enum lb_reason: array keys must be integers */
	__type(value, __u64);
} reasons SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_settings);
} settings SEC(".maps");

#endif /* LBCTL_MAPS_H */
