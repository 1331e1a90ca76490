#!/bin/sh
# The whole suite in one `node --test` run (one summary): unit and packet
# tests, then the network-namespace lab tests. Needs root and `make`.
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
# shellcheck disable=SC2086
exec node --test $serial dist/test/*.test.js
