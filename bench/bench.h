/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared by the benchmark's XDP programs (not part of the balancer). */
#ifndef LBCTL_BENCH_H
#define LBCTL_BENCH_H

/* UDP destination port of the generated traffic (discard). */
#define BENCH_UDP_PORT 9

/* Frames the generator writes: Ethernet + IPv4 + UDP + payload, 60 bytes. */
#define BENCH_FRAME_LEN 60

#endif
