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

int lbctl_map_info(int fd, unsigned *id, unsigned *type, unsigned *max_entries, char *name,
		   unsigned name_capacity)
{
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(fd, &info, &len))
		return -errno;
	*id = info.id;
	*type = info.type;
	*max_entries = info.max_entries;
	snprintf(name, name_capacity, "%s", info.name);
	return 0;
}
