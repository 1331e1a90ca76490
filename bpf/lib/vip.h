/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Is a packet for a VIP: the address filter first (one bit per hash of
 * the destination address, an inlined array read), then the VIP entry.
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

#endif /* LBCTL_VIP_H */
