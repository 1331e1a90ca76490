/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys and values shared with the control plane.
 *
 * This header is the single source of truth for their layout. The
 * TypeScript codecs in src/dataplane/abi.ts are checked against the BTF of
 * the compiled objects by test/abi.test.ts, so a change here that is not
 * mirrored there fails the build's tests instead of corrupting maps.
 *
 * Every struct is padded explicitly: no implicit holes, so that the kernel
 * never compares or hashes uninitialised bytes in a key. Addresses are in
 * network order; IPv4 addresses in 16-byte fields use the first 4 bytes.
 */
#ifndef LBCTL_ABI_H
#define LBCTL_ABI_H

#include <linux/types.h>

/* Forwarding methods, per backend (the VIP's default is resolved by the
 * control plane before the entry is written). */
enum lb_forward {
	LB_FORWARD_L2DSR = 1, /* rewrite destination MAC, same L2 segment */
	LB_FORWARD_IPIP = 2,  /* IP-in-IP (outer header of the backend's family) */
};

enum lb_backend_flags {
	/* The backend may receive traffic. Cleared before an id is recycled so
	 * that connection-tracking entries that still point at it are
	 * re-balanced instead of forwarded to whatever takes the id next. */
	LB_BACKEND_F_ACTIVE = 1 << 0,
	/* The backend's address (and the tunnel's) is IPv6. */
	LB_BACKEND_F_IPV6 = 1 << 1,
};

/* What happened to a packet that was not simply balanced, and a few events.
 * Indexes the per-CPU `reasons` counter array. */
enum lb_reason {
	LB_REASON_NOT_IP = 0,           /* neither IPv4 nor IPv6 (ARP, LLDP...): passed */
	LB_REASON_NOT_VIP,              /* not addressed to a VIP: passed */
	LB_REASON_MALFORMED,            /* IP header inconsistent with the frame: passed */
	LB_REASON_FRAGMENT,             /* IPv4 fragment or IPv6 fragment header: passed */
	LB_REASON_L4_TRUNCATED,         /* TCP/UDP header cut short: passed */
	LB_REASON_L4_UNSUPPORTED,       /* neither TCP, UDP nor a handled ICMP: passed */
	LB_REASON_IPV6_ROUTING,         /* IPv6 routing header: passed */
	LB_REASON_VLAN_STACKED,         /* more than one VLAN tag: passed */
	LB_REASON_NO_BACKEND,           /* VIP without a usable backend: dropped */
	LB_REASON_ENCAP_FAILED,         /* no room to add a header: dropped */
	LB_REASON_KILL_SWITCH,          /* VIP packet while the kill-switch is tripped: passed */
	LB_REASON_ICMP_ECHO_REPLIED,    /* echo request to a VIP address: answered */
	LB_REASON_ICMP_ERROR_FORWARDED, /* too-big error about a VIP flow: sent to its backend */
	LB_REASON_TOO_BIG_REPLIED,      /* too big once encapsulated: ICMP too-big sent back */
	LB_REASON_TOO_BIG_DROPPED,      /* too big, and fragmenting allowed or no reply possible: dropped */
	LB_REASON_NOT_FOR_THIS_HOST,    /* unicast to another MAC (a switch flooding): passed */
	LB_REASON_MAX,
};

/*
 * The single entry of `settings`. The control plane keeps pushing the
 * deadline forward while it is alive; once the data plane's clock passes
 * it, VIP packets go to the kernel untouched (fail-open). Zero, the value
 * of a fresh map, is already past: nothing is balanced before the control
 * plane has said so.
 */
struct lb_settings {
	__u64 kill_switch_deadline; /* jiffies */
	/* Of the layouts of all maps and their keys and values, for the control
	 * plane only: a restarted daemon takes pinned maps over only when its
	 * own fingerprint is the same. */
	__u64 abi_fingerprint;
	/* This node's MAC on the interface the program is attached to. A frame
	 * to another unicast MAC (a switch flooding an unknown destination)
	 * is not this node's to balance. All zero: not checked. */
	__u8 mac[6];
	__u16 flags; /* enum lb_settings_flags */
};

enum lb_settings_flags {
	/* Maglev table entries are 32-bit backend ids, one per array element;
	 * otherwise 16-bit, two per element (backend ids below 65536): half
	 * the memory and cache footprint. Fixed for the life of the maps. */
	LB_SETTINGS_F_WIDE_TABLES = 1 << 0,
	/* Some VIP has port 0: a packet no exact-port VIP matches looks for
	 * the VIP of all ports of its address. Clear, that lookup is skipped. */
	LB_SETTINGS_F_ANY_PORT_VIPS = 1 << 1,
};

/* VIP map keys: destination address, port and protocol of the packet. */
struct vip_key_v4 {
	__be32 addr;
	__be16 port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

struct vip_key_v6 {
	__be32 addr[4];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/*
 * A VIP's key may have port 0: the VIP of all ports of its address and
 * protocol (like Katran's and IPVS's fwmark services), matched by packets
 * to ports no VIP of their own has.
 */
struct vip_info {
	__u32 vip_id;     /* index into vip_stats */
	__u32 table_id;   /* index into maglev_tables */
	__u32 table_size; /* entries in that table, a prime */
	__u32 flags;      /* enum lb_vip_flags */
};

enum lb_vip_flags {
	/* A new flow's Maglev slot comes from the hash of its source address
	 * alone: all flows of a client reach one backend (client stickiness,
	 * IPVS's sh scheduler). Tracking still follows each 5-tuple. */
	LB_VIP_F_HASH_SOURCE = 1 << 0,
};

/* Connection tracking: the flow's 5-tuple as seen on the wire. */
struct flow_key_v4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_key_v6 {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

enum lb_flow_flags {
	/* The client sent FIN or RST: the connection is ending. Lets a drain
	 * finish without waiting for the flow to go idle. */
	LB_FLOW_F_CLOSING = 1 << 0,
};

struct flow_state {
	__u32 backend_id;
	__u32 flags;     /* enum lb_flow_flags */
	__u64 last_seen; /* jiffies; refreshed when LB_FLOW_TOUCH_JIFFIES old */
};

/*
 * Everything needed to forward to one backend of one VIP, resolved by the
 * control plane (routes, neighbours, own addresses, MTU) so that the
 * per-packet path only copies it. vip_id and address also identify the
 * entry, so a restarted control plane can take the maps over as they are.
 */
struct backend_info {
	__u8 dst_mac[6]; /* backend (l2dsr) or next hop towards it (ipip) */
	__u8 src_mac[6]; /* MAC of the egress interface */
	__u32 ifindex;   /* egress interface; XDP_TX when it is the ingress */
	__u8 forward;    /* enum lb_forward */
	__u8 flags;      /* enum lb_backend_flags */
	/* Largest IP packet the path to the backend carries (ipip): bigger ones
	 * get an ICMP too-big answer. 0: unknown, not checked. */
	__u16 mtu;
	__be32 address[4];    /* the backend; the outer destination (ipip) */
	__be32 tunnel_src[4]; /* outer source (ipip): the balancer's address */
	/* One's-complement sum of an outer IPv4 header's address words, not
	 * folded: per packet only the other words are added. */
	__u32 tunnel_csum_base;
	__u32 vip_id; /* the VIP this entry serves */
	/* Outer source range (ipip): these bits of the outer source's last 32
	 * bits (network order; the host part of a prefix) are the low bits of
	 * the flow's hash, so that a backend's NIC, whose RSS hashes only the
	 * outer addresses of a tunnelled packet, spreads the flows over its
	 * receive queues. tunnel_src holds the range's first address (these
	 * bits zero). 0: one source for all flows. */
	__be32 tunnel_src_spread;
};

/* Per VIP and per backend. Packets of tracked flows = packets - new_flows. */
struct traffic_counters {
	__u64 packets;
	__u64 bytes;       /* IP bytes */
	__u64 new_flows;   /* flows given a backend from the Maglev table */
	__u64 moved_flows; /* of which tracked flows whose backend was gone */
};

#endif /* LBCTL_ABI_H */
