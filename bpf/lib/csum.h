/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef LBCTL_CSUM_H
#define LBCTL_CSUM_H

#include <linux/ip.h>
#include <linux/types.h>
#include <stdbool.h>

/* Folds a 32-bit one's-complement sum into the 16-bit checksum field. */
static __always_inline __sum16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* Sum of the 16-bit words of a buffer whose length is a constant. */
static __always_inline __u32 csum_words(const void *buf, __u32 len, __u32 sum)
{
	const __u16 *words = buf;
	__u32 i;

#pragma unroll
	for (i = 0; i < len / 2; i++)
		sum += words[i];
	return sum;
}

/* RFC 1624: the checksum after one 16-bit word of what it covers changed. */
static __always_inline __sum16 csum_replace16(__sum16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	return csum_fold32(sum);
}

/* A 20-byte IPv4 header whose checksum adds up. */
static __always_inline bool ipv4_short_header_valid(const struct iphdr *ip)
{
	return csum_fold32(csum_words(ip, sizeof(*ip), 0)) == 0;
}

#endif /* LBCTL_CSUM_H */
