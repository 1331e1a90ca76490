// SPDX-License-Identifier: Apache-2.0
/*
 * The parts of libbpf that a foreign-function call cannot reach directly:
 * its print callback takes a va_list, and several calls take option structs
 * whose first field is their own size. Everything else is called straight
 * from src/dataplane/libbpf.ts. Shipped in build/native/liblbctl.so, with
 * dsr_probe.c; what only tests and benchmarks call is in testing.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
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

/*
 * Runs the program once (repeat 1) on one packet: the data plane's clock
 * (src/dataplane/clock.ts runs lb_clock) and single test packets.
 * *out_len: out's capacity in, the output's length out.
 */
int lbctl_test_run(int prog_fd, const void *in, unsigned in_len, void *out, unsigned *out_len, unsigned *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts,
		    .data_in = in,
		    .data_size_in = in_len,
		    .data_out = out,
		    .data_size_out = *out_len,
		    .repeat = 1);

	if (bpf_prog_test_run_opts(prog_fd, &opts))
		return -errno;
	*out_len = opts.data_size_out;
	*retval = opts.retval;
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
