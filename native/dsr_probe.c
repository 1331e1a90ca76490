// SPDX-License-Identifier: Apache-2.0
/*
 * The DSR-path health check (src/health/dsr-probe.ts), shipped in
 * build/native/liblbctl.so beside the libbpf adapters. Sends one Ethernet
 * frame (a TCP SYN built the way the data plane forwards a client's
 * packet: l2dsr or IP-in-IP of either family) out of ifindex through an
 * AF_PACKET socket, then waits up to timeout_ms for the backend's answer,
 * a TCP segment from vip:vip_port to source:source_port. The backend
 * answers directly, so the answer is of the VIP's family (`family`, 4 or
 * 6) whatever the frame's outer header: vip and source are 4 or 16 bytes
 * in network order, the ports are in host order. Returns 1 for a SYN-ACK,
 * 2 for a RST, 0 on timeout, -errno on failure. A classic BPF filter,
 * attached before the socket is bound, keeps every other packet of the
 * interface out of the socket. Blocks: call it from a worker thread
 * (koffi's .async).
 */
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sys/socket.h>

/* The fixed IPv6 header; TCP follows it in the answers the filter admits. */
#define DSR_IPV6_HLEN 40

/* A jump target not known yet: the filter's final "drop", patched by dsr_filter_finish. */
#define DSR_TO_DROP 0xff

struct dsr_filter {
	struct sock_filter code[40];
	unsigned short len;
};

static void dsr_emit(struct dsr_filter *f, struct sock_filter insn)
{
	f->code[f->len++] = insn;
}

/* Drops the packet unless A == value. */
static void dsr_require_equal(struct dsr_filter *f, __u32 value)
{
	dsr_emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, value, 0, DSR_TO_DROP));
}

/* Drops the packet if A has any bit of mask set. */
static void dsr_require_clear(struct dsr_filter *f, __u32 mask)
{
	dsr_emit(f, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, mask, DSR_TO_DROP, 0));
}

/* Loads the 32-bit words of an address at `offset` of the frame, each required equal. */
static void dsr_require_address(struct dsr_filter *f, unsigned offset, const unsigned char *address, unsigned bytes)
{
	unsigned i;

	for (i = 0; i < bytes; i += 4) {
		__u32 word;

		memcpy(&word, address + i, 4);
		dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset + i));
		dsr_require_equal(f, ntohl(word));
	}
}

/* Appends accept and drop, and points every DSR_TO_DROP jump at the drop. */
static void dsr_filter_finish(struct dsr_filter *f)
{
	unsigned short drop, i;

	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 256));
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0));
	drop = f->len - 1;
	for (i = 0; i < f->len; i++) {
		if (BPF_CLASS(f->code[i].code) != BPF_JMP)
			continue;
		if (f->code[i].jt == DSR_TO_DROP)
			f->code[i].jt = (__u8)(drop - i - 1);
		if (f->code[i].jf == DSR_TO_DROP)
			f->code[i].jf = (__u8)(drop - i - 1);
	}
}

/* IPv4 vip:vip_port -> source:source_port, not a fragment; the header may carry options. */
static void dsr_filter_v4(struct dsr_filter *f, const unsigned char *vip, unsigned short vip_port,
			  const unsigned char *source, unsigned short source_port)
{
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12));	/* ethertype */
	dsr_require_equal(f, ETH_P_IP);
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23));	/* protocol */
	dsr_require_equal(f, IPPROTO_TCP);
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 20));	/* fragment offset */
	dsr_require_clear(f, 0x1fff);
	dsr_require_address(f, 26, vip, 4);
	dsr_require_address(f, 30, source, 4);
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14));	/* X = IHL * 4 */
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_IND, 14));	/* source port */
	dsr_require_equal(f, vip_port);
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_IND, 16));	/* destination port */
	dsr_require_equal(f, source_port);
}

/* IPv6 vip:vip_port -> source:source_port, TCP right after the fixed header (a SYN-ACK or RST carries no extension headers). */
static void dsr_filter_v6(struct dsr_filter *f, const unsigned char *vip, unsigned short vip_port,
			  const unsigned char *source, unsigned short source_port)
{
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12));	/* ethertype */
	dsr_require_equal(f, ETH_P_IPV6);
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 20));	/* next header */
	dsr_require_equal(f, IPPROTO_TCP);
	dsr_require_address(f, 22, vip, 16);
	dsr_require_address(f, 38, source, 16);
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 54));	/* source port */
	dsr_require_equal(f, vip_port);
	dsr_emit(f, (struct sock_filter)BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 56));	/* destination port */
	dsr_require_equal(f, source_port);
}

/*
 * The TCP header of a received frame if it is vip:vip_port -> source:source_port
 * (the filter checked all of this; check again rather than trust it blindly), else NULL.
 */
static const unsigned char *dsr_answer_tcp(const unsigned char *frame, size_t n, int family,
					   const unsigned char *vip, unsigned short vip_port,
					   const unsigned char *source, unsigned short source_port)
{
	const unsigned char *ip = frame + ETH_HLEN, *tcp;

	if (n < ETH_HLEN + 20)
		return NULL;
	if (family == 4) {
		unsigned ihl = (ip[0] & 0x0f) * 4u;

		if ((ip[0] >> 4) != 4 || ihl < 20 || n < ETH_HLEN + ihl + 14 || ip[9] != IPPROTO_TCP)
			return NULL;
		if (memcmp(ip + 12, vip, 4) || memcmp(ip + 16, source, 4))
			return NULL;
		tcp = ip + ihl;
	} else {
		if (n < ETH_HLEN + DSR_IPV6_HLEN + 14 || (ip[0] >> 4) != 6 || ip[6] != IPPROTO_TCP)
			return NULL;
		if (memcmp(ip + 8, vip, 16) || memcmp(ip + 24, source, 16))
			return NULL;
		tcp = ip + DSR_IPV6_HLEN;
	}
	if (((tcp[0] << 8) | tcp[1]) != vip_port || ((tcp[2] << 8) | tcp[3]) != source_port)
		return NULL;
	return tcp;
}

static unsigned long long dsr_now_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (unsigned long long)now.tv_sec * 1000ull + (unsigned long long)now.tv_nsec / 1000000ull;
}

int lbctl_dsr_probe(int ifindex, const void *frame, unsigned len, int family, const void *vip,
		    unsigned short vip_port, const void *source, unsigned short source_port,
		    unsigned timeout_ms)
{
	struct dsr_filter filter = { .len = 0 };
	struct sock_fprog prog;
	struct sockaddr_ll addr = {
		.sll_family = AF_PACKET,
		.sll_ifindex = ifindex,
	};
	unsigned long long deadline_ms;
	unsigned char buf[256];
	int fd, err = 0, result = 0;

	if (!frame || len < ETH_HLEN + 20 || ifindex <= 0 || !vip || !source || (family != 4 && family != 6))
		return -EINVAL;
	if (family == 4) {
		dsr_filter_v4(&filter, vip, vip_port, source, source_port);
		addr.sll_protocol = htons(ETH_P_IP);
	} else {
		dsr_filter_v6(&filter, vip, vip_port, source, source_port);
		addr.sll_protocol = htons(ETH_P_IPV6);
	}
	dsr_filter_finish(&filter);
	prog = (struct sock_fprog){ .len = filter.len, .filter = filter.code };
	/* Protocol 0: receives nothing until bound, by which time the filter is in place. */
	fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) ||
	    bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		err = -errno;
		goto out;
	}
	if (send(fd, frame, len, 0) != (ssize_t)len) {
		err = errno ? -errno : -EIO;
		goto out;
	}
	deadline_ms = dsr_now_ms() + timeout_ms;
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		unsigned long long now_ms = dsr_now_ms();
		const unsigned char *tcp;
		ssize_t n;
		int ready;

		if (now_ms >= deadline_ms)
			break;
		ready = poll(&pfd, 1, (int)(deadline_ms - now_ms));
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (ready == 0)
			break;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			err = -errno;
			break;
		}
		tcp = dsr_answer_tcp(buf, (size_t)n, family, vip, vip_port, source, source_port);
		if (!tcp)
			continue;
		if (tcp[13] & 0x04) {			/* RST */
			result = 2;
			break;
		}
		if ((tcp[13] & 0x12) == 0x12) {		/* SYN-ACK */
			result = 1;
			break;
		}
	}
out:
	close(fd);
	return err ? err : result;
}
