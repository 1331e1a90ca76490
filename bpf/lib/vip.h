/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Is a packet for a VIP: the address filter first (one bit per hash of
 * the destination address, an inlined array read), then the VIP entry of
 * its port, then the VIP of all ports of its address.
 */
#ifndef LBCTL_VIP_H
#define LBCTL_VIP_H

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "maps.h"

/*
 * The filter bit of an address: its 32-bit words (host order) mixed by
 * multiplicative hashing, the top 16 bits of the result.
 * src/dataplane/abi.ts (vipFilterBit) computes the same.
 */
#define VIP_FILTER_MIX 0x9e3779b1u

static __always_inline bool vip_filter_has(__u32 hash)
{
	__u32 bit = hash >> 16;
	__u32 word = bit >> 6;
	__u64 *bits = bpf_map_lookup_elem(&vip_filter, &word);

	return bits && (*bits & (1ull << (bit & 63)));
}

/* False: no VIP has this address (true may still be none: the filter only rules out). */
static __always_inline bool vip_address_possible_v4(__be32 addr)
{
	return vip_filter_has(bpf_ntohl(addr) * VIP_FILTER_MIX);
}

static __always_inline bool vip_address_possible_v6(const __be32 *addr)
{
	__u32 h = bpf_ntohl(addr[0]) * VIP_FILTER_MIX;

	h = (h ^ bpf_ntohl(addr[1])) * VIP_FILTER_MIX;
	h = (h ^ bpf_ntohl(addr[2])) * VIP_FILTER_MIX;
	return vip_filter_has((h ^ bpf_ntohl(addr[3])) * VIP_FILTER_MIX);
}

/*
 * The VIP of a packet: the one of its destination port, else (when any
 * exists) the one of all ports of its address and protocol.
 */
static __always_inline struct vip_info *find_vip_v4(__be32 addr, __be16 port, __u8 proto, const struct lb_settings *cfg)
{
	struct vip_key_v4 key = {};
	struct vip_info *vip;

	key.addr = addr;
	key.port = port;
	key.proto = proto;
	vip = bpf_map_lookup_elem(&vips_v4, &key);
	if (vip || !(cfg->flags & LB_SETTINGS_F_ANY_PORT_VIPS))
		return vip;
	key.port = 0;
	return bpf_map_lookup_elem(&vips_v4, &key);
}

static __always_inline struct vip_info *find_vip_v6(const struct in6_addr *addr, __be16 port, __u8 proto,
						     const struct lb_settings *cfg)
{
	struct vip_key_v6 key = {};
	struct vip_info *vip;

	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	key.port = port;
	key.proto = proto;
	vip = bpf_map_lookup_elem(&vips_v6, &key);
	if (vip || !(cfg->flags & LB_SETTINGS_F_ANY_PORT_VIPS))
		return vip;
	key.port = 0;
	return bpf_map_lookup_elem(&vips_v6, &key);
}

#endif /* LBCTL_VIP_H */
