/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef LBCTL_CSUM_H
#define LBCTL_CSUM_H

#include <linux/types.h>

/* Folds a 32-bit one's-complement sum into the 16-bit checksum field. */
static __always_inline __sum16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

#endif /* LBCTL_CSUM_H */
