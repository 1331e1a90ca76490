// SPDX-License-Identifier: Apache-2.0
/*
 * The parts of libbpf that a foreign-function call cannot reach directly:
 * its print callback takes a va_list, and several calls take option structs
 * whose first field is their own size. Everything else is called straight
 * from src/dataplane/libbpf.ts.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define LOG_CAPACITY (256 * 1024)

static char log_buf[LOG_CAPACITY];
static size_t log_len;

static int capture_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	int n;

	if (level == LIBBPF_DEBUG || log_len >= LOG_CAPACITY - 1)
		return 0;
	n = vsnprintf(log_buf + log_len, LOG_CAPACITY - log_len, fmt, args);
	if (n > 0)
		log_len += (size_t)n < LOG_CAPACITY - log_len ? (size_t)n : LOG_CAPACITY - 1 - log_len;
	return n;
}

/* Routes libbpf's warnings (verifier log included) into a buffer. */
void lbctl_log_capture(void)
{
	libbpf_set_print(capture_print);
}

/* Copies what was captured since the last call and clears it. */
size_t lbctl_log_take(char *out, size_t capacity)
{
	size_t n = log_len < capacity ? log_len : capacity;

	memcpy(out, log_buf, n);
	log_len = 0;
	return n;
}

int lbctl_map_create(int type, const char *name, unsigned key_size, unsigned value_size,
		     unsigned max_entries, unsigned flags)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = flags);
	int fd = bpf_map_create(type, name, key_size, value_size, max_entries, &opts);

	return fd < 0 ? -errno : fd;
}

/* Writes count entries in one system call; returns how many were written. */
int lbctl_map_update_batch(int fd, const void *keys, const void *values, unsigned count,
			   unsigned long long elem_flags)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = elem_flags);
	__u32 done = count;
	int err = bpf_map_update_batch(fd, keys, values, &done, &opts);

	return err ? -errno : (int)done;
}

/*
 * Fills a BPF_F_MMAPABLE array map of __u32 values from its first entry
 * through a shared mapping: one pass in user space instead of the kernel
 * copying each element of a batch update (a 65537-entry Maglev table:
 * ~22 ms by batch on the development hosts). The kernel stores array
 * elements 8 bytes apart. Only for a map no program sees yet: readers of a
 * live map could see a partial write.
 */
#include <sys/mman.h>
#include <unistd.h>

int lbctl_array_fill_u32(int fd, const unsigned *values, unsigned count)
{
	const size_t stride = 8;
	long page = sysconf(_SC_PAGESIZE);
	size_t size = ((size_t)count * stride + page - 1) / page * page;
	unsigned char *mem;
	unsigned i;

	if (!values || count == 0)
		return -EINVAL;
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		return -errno;
	for (i = 0; i < count; i++)
		memcpy(mem + (size_t)i * stride, &values[i], sizeof(values[i]));
	munmap(mem, size);
	return 0;
}

/*
 * Reads up to *count entries after the position in in_batch (NULL: from
 * the start) and stores the next position in out_batch. Returns 1 while
 * more entries follow, 0 after the last batch, -errno on failure.
 */
int lbctl_map_lookup_batch(int fd, const void *in_batch, void *out_batch, void *keys, void *values,
			   unsigned *count)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	__u32 n = *count;
	int err = bpf_map_lookup_batch(fd, (void *)in_batch, out_batch, keys, values, &n, &opts);

	*count = n;
	if (err && errno == ENOENT)
		return 0;
	return err ? -errno : 1;
}

int lbctl_test_run(int prog_fd, const void *in, unsigned in_len, void *out, unsigned *out_len,
		   unsigned *retval, int repeat, unsigned *duration_ns, unsigned flags)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts,
		    .data_in = in,
		    .data_size_in = in_len,
		    .data_out = out,
		    .data_size_out = out ? *out_len : 0,
		    .repeat = repeat,
		    .flags = flags);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return -errno;
	if (out_len)
		*out_len = opts.data_size_out;
	*retval = opts.retval;
	*duration_ns = opts.duration;
	return 0;
}

/*
 * Benchmarks: runs the program `iterations` times with repeat 1, cycling
 * through `count` packets of `len` bytes each, and stores the kernel's
 * duration of every run. Repeat 1 matters: with repeat N the kernel feeds
 * the program its own output, which an encapsulating program then passes.
 */
int lbctl_test_run_durations(int prog_fd, const unsigned char *packets, unsigned len, unsigned count,
			     unsigned iterations, unsigned *durations_ns)
{
	unsigned i;

	for (i = 0; i < iterations; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts,
			    .data_in = packets + (size_t)(i % count) * len,
			    .data_size_in = len,
			    .repeat = 1);

		if (bpf_prog_test_run_opts(prog_fd, &opts))
			return -errno;
		durations_ns[i] = opts.duration;
	}
	return 0;
}

/*
 * Tests: like lbctl_test_run_durations, but keeps what the program did with
 * each packet: its action and the first head_len bytes of its output.
 */
int lbctl_test_run_outputs(int prog_fd, const unsigned char *packets, unsigned len, unsigned count,
			   unsigned iterations, unsigned char *actions, unsigned char *heads, unsigned head_len)
{
	unsigned char out[2048];
	unsigned i;

	for (i = 0; i < iterations; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts,
			    .data_in = packets + (size_t)(i % count) * len,
			    .data_size_in = len,
			    .data_out = out,
			    .data_size_out = sizeof(out),
			    .repeat = 1);

		if (bpf_prog_test_run_opts(prog_fd, &opts))
			return -errno;
		actions[i] = (unsigned char)opts.retval;
		memcpy(heads + (size_t)i * head_len, out, head_len < opts.data_size_out ? head_len : opts.data_size_out);
	}
	return 0;
}

/* Attaches, replacing old_prog_fd atomically when it is >= 0. */
int lbctl_xdp_attach(int ifindex, int prog_fd, unsigned flags, int old_prog_fd)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = old_prog_fd);
	int err = bpf_xdp_attach(ifindex, prog_fd, flags, old_prog_fd >= 0 ? &opts : NULL);

	return err < 0 ? -errno : 0;
}

/* The XDP program ids attached to an interface, per attach mode. */
int lbctl_xdp_query(int ifindex, unsigned *drv_prog_id, unsigned *skb_prog_id,
		    unsigned *attach_mode)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, opts);
	int err = bpf_xdp_query(ifindex, 0, &opts);

	if (err)
		return -errno;
	*drv_prog_id = opts.drv_prog_id;
	*skb_prog_id = opts.skb_prog_id;
	*attach_mode = opts.attach_mode;
	return 0;
}

int lbctl_prog_info(int fd, unsigned *id, char *name, unsigned name_capacity)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	*id = info.id;
	snprintf(name, name_capacity, "%s", info.name);
	return 0;
}

/* fields: id, type, key size, value size, max entries, flags. */
int lbctl_map_info(int fd, unsigned *fields, char *name, unsigned name_capacity)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	fields[0] = info.id;
	fields[1] = info.type;
	fields[2] = info.key_size;
	fields[3] = info.value_size;
	fields[4] = info.max_entries;
	fields[5] = info.map_flags;
	snprintf(name, name_capacity, "%s", info.name);
	return 0;
}

/*
 * Benchmarks: a traffic generator on BPF_PROG_TEST_RUN live frames
 * (BPF_F_TEST_XDP_LIVE_FRAMES). `threads` threads, thread i pinned to CPU
 * i % online CPUs, each call the program on `repeat` frames made from
 * `frame` as if received on ingress_ifindex (rx queue of the thread's CPU
 * modulo rx_queues), in batches of batch_size, until duration_ms has
 * passed. The program rewrites every frame and XDP_TXes or redirects it.
 * With interval_us > 0 each thread makes one call per interval (paced
 * traffic; repeat frames per call). The program should be attached to
 * some interface too: otherwise every call with repeat > 1 pays a
 * dispatcher update (~24 ms). result[0] = frames sent, result[1] = ns
 * elapsed (longest thread). Returns 0 or -errno (first failing thread).
 */
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct live_run {
	int prog_fd;
	const void *frame;
	unsigned len;
	int ingress_ifindex;
	unsigned rx_queue;
	unsigned repeat;
	unsigned batch_size;
	int cpu;
	unsigned long long duration_ns;
	unsigned interval_us;
	unsigned long long frames;
	unsigned long long elapsed_ns;
	int err;
};

static unsigned long long monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static void *live_run_thread(void *arg)
{
	struct live_run *r = arg;
	struct xdp_md ctx = {
		.data = 0,
		.data_end = r->len,
		.ingress_ifindex = (__u32)r->ingress_ifindex,
		.rx_queue_index = r->rx_queue,
	};
	unsigned long long start, now, next;
	unsigned long mask[16] = {};

	/* sched_setaffinity(0, ...) pins the calling thread only. */
	if (r->cpu >= 0 && r->cpu < 1024) {
		mask[r->cpu / 64] = 1ul << (r->cpu % 64);
		if (syscall(SYS_sched_setaffinity, 0, sizeof(mask), mask)) {
			r->err = -errno;
			return NULL;
		}
	}
	start = now = next = monotonic_ns();
	while (now - start < r->duration_ns) {
		LIBBPF_OPTS(bpf_test_run_opts, opts,
			    .data_in = r->frame,
			    .data_size_in = r->len,
			    .ctx_in = &ctx,
			    .ctx_size_in = sizeof(ctx),
			    .repeat = r->repeat,
			    .batch_size = r->batch_size,
			    .flags = BPF_F_TEST_XDP_LIVE_FRAMES);

		if (bpf_prog_test_run_opts(r->prog_fd, &opts)) {
			r->err = -errno;
			break;
		}
		r->frames += r->repeat;
		now = monotonic_ns();
		if (r->interval_us) {
			next += (unsigned long long)r->interval_us * 1000ull;
			if (next > now) {
				struct timespec ts = { .tv_sec = (time_t)((next - now) / 1000000000ull),
						       .tv_nsec = (long)((next - now) % 1000000000ull) };
				nanosleep(&ts, NULL);
				now = monotonic_ns();
			}
		}
	}
	r->elapsed_ns = now - start;
	return NULL;
}

int lbctl_xdp_live_run(int prog_fd, const void *frame, unsigned len, int ingress_ifindex,
		       unsigned rx_queues, unsigned repeat, unsigned batch_size, unsigned threads,
		       unsigned duration_ms, unsigned interval_us, unsigned long long *result)
{
	struct live_run runs[64];
	pthread_t ids[64];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned i, started = 0;
	int err = 0;

	if (threads == 0 || threads > 64 || repeat == 0)
		return -EINVAL;
	if (cpus < 1)
		cpus = 1;
	for (i = 0; i < threads; i++) {
		runs[i] = (struct live_run){
			.prog_fd = prog_fd, .frame = frame, .len = len,
			.ingress_ifindex = ingress_ifindex,
			.rx_queue = rx_queues ? (unsigned)(i % (unsigned)cpus) % rx_queues : 0,
			.repeat = repeat, .batch_size = batch_size,
			.cpu = (int)(i % (unsigned)cpus),
			.duration_ns = (unsigned long long)duration_ms * 1000000ull,
			.interval_us = interval_us,
		};
		if (pthread_create(&ids[i], NULL, live_run_thread, &runs[i])) {
			err = -EAGAIN;
			break;
		}
		started++;
	}
	result[0] = 0;
	result[1] = 0;
	for (i = 0; i < started; i++) {
		pthread_join(ids[i], NULL);
		result[0] += runs[i].frames;
		if (runs[i].elapsed_ns > result[1])
			result[1] = runs[i].elapsed_ns;
		if (!err && runs[i].err)
			err = runs[i].err;
	}
	return err;
}

/*
 * Health checks (src/health/dsr-probe.ts): sends one Ethernet frame (a TCP
 * SYN built the way the data plane forwards a client's packet: l2dsr or
 * IP-in-IP of either family) out of ifindex through an AF_PACKET socket,
 * then waits up to timeout_ms for the backend's answer, a TCP segment from
 * vip:vip_port to source:source_port. The backend answers directly, so the
 * answer is of the VIP's family (`family`, 4 or 6) whatever the frame's
 * outer header: vip and source are 4 or 16 bytes in network order, the
 * ports are in host order. Returns 1 for a SYN-ACK, 2 for a RST, 0 on
 * timeout, -errno on failure. A classic BPF filter, attached before the
 * socket is bound, keeps every other packet of the interface out of the
 * socket. Blocks: call it from a worker thread (koffi's .async).
 */
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

/*
 * Fuzzing (test/support/fuzz.ts): runs the program once (repeat 1) on
 * each of `count` frames of variable length, frame i being lengths[i]
 * bytes at frames + offsets[i], and copies each output into its own slot
 * of out_stride bytes at outputs + i * out_stride. actions[i] is the XDP
 * action and out_lengths[i] the output's length; frames shorter than an
 * Ethernet header (the kernel refuses them) get action 0xff and length 0;
 * a frame the kernel refuses otherwise gets action 0xfe and its errno in
 * out_lengths[i] (ENOSPC: the output did not fit in out_stride bytes);
 * a return value that is no XDP action at all gets 0xfd.
 * Returns the number of frames run, or -EINVAL.
 */
int lbctl_test_run_batch(int prog_fd, const unsigned char *frames, const unsigned *offsets,
			 const unsigned *lengths, unsigned count, unsigned char *outputs,
			 unsigned out_stride, unsigned *out_lengths, unsigned char *actions)
{
	unsigned i, run = 0;

	if (!frames || !offsets || !lengths || !outputs || !out_lengths || !actions || out_stride == 0)
		return -EINVAL;
	for (i = 0; i < count; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, opts,
			    .data_in = frames + offsets[i],
			    .data_size_in = lengths[i],
			    .data_out = outputs + (size_t)i * out_stride,
			    .data_size_out = out_stride,
			    .repeat = 1);

		if (lengths[i] < 14) {
			actions[i] = 0xff;
			out_lengths[i] = 0;
			continue;
		}
		if (bpf_prog_test_run_opts(prog_fd, &opts)) {
			actions[i] = 0xfe;
			out_lengths[i] = (unsigned)errno;
			continue;
		}
		/* Not an XDP action at all: 0xfd, kept apart from the codes above. */
		actions[i] = opts.retval < 0xfd ? (unsigned char)opts.retval : 0xfd;
		out_lengths[i] = opts.data_size_out;
		run++;
	}
	return (int)run;
}
