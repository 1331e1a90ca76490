#!/bin/sh
# The whole suite in one `node --test` run (one summary): unit tests (no
# root, no kernel), kernel tests (BPF programs through BPF_PROG_TEST_RUN,
# the reconciler against real maps), then the network-namespace lab tests.
# Needs root and `make`.
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "run-tests: run as root (the tests load BPF programs and build network namespaces)" >&2
	exit 1
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# Files run one at a time: lab tests are heavy, and a failure is easier to
# read when output is not interleaved (Node 18 has no flag for it but runs
# one file per spare core, one on the 2-core CI hosts).
serial=""
node --help | grep -q -- --test-concurrency && serial="--test-concurrency=1"

# What tests could leave on the host: pinned objects (and directories) in
# the bpffs, network namespaces. Anything new after the run fails it.
host_objects() {
	{ (cd /sys/fs/bpf && find . -mindepth 1 | sed 's|^\./|/sys/fs/bpf/|'); ip netns list | sed 's/ .*//; s/^/netns /'; } | sort
}
before=$(mktemp)
trap 'rm -f "$before"' EXIT
host_objects >"$before"

status=0
# shellcheck disable=SC2086
node --test $serial dist/test/unit/*.test.js dist/test/kernel/*.test.js dist/test/lab/*.test.js || status=$?

left=$(host_objects | comm -13 "$before" -)
if [ -n "$left" ]; then
	echo "run-tests: the tests left these behind:" >&2
	echo "$left" | sed 's/^/    /' >&2
	[ "$status" -ne 0 ] || status=1
fi
exit "$status"
