// SPDX-License-Identifier: Apache-2.0
/*
 * What only the tests and benchmarks call (test/support/native-testing.ts):
 * loops of BPF_PROG_TEST_RUN that would cost a foreign-function call per
 * packet from JavaScript, and a live-frames traffic generator. Built as
 * build/native/liblbctl-testing.so, which `make install` leaves out.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

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
