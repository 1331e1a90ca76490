/**
 * The native helpers only tests and benchmarks call: native/testing.c,
 * built as build/native/liblbctl-testing.so, which `make install` leaves
 * out (the product's own native calls are in src/dataplane/libbpf.ts).
 * Loops of BPF_PROG_TEST_RUN run in C: a foreign-function call per packet
 * would cost more than the program measured. Functions return 0 or -errno
 * (testRunBatch: the frames run); src/dataplane/libbpf.ts's orThrow() turns
 * that into an exception.
 */
import { resolve } from 'node:path';
import koffi from 'koffi';
import { PROJECT_ROOT } from '../../src/paths.js';

export const NATIVE_TESTING_LIB = resolve(PROJECT_ROOT, 'build', 'native', 'liblbctl-testing.so');

const lib = koffi.load(NATIVE_TESTING_LIB);

export const nativeTesting = {
  /** Benchmarks: `iterations` runs (repeat 1) cycling through `count` packets of `len` bytes; the kernel's duration of each. */
  testRunDurations: lib.func(
    'int lbctl_test_run_durations(int prog_fd, const uint8_t *packets, uint32_t len, uint32_t count, uint32_t iterations, _Out_ uint32_t *durations_ns)',
  ),
  /** Tests (test/support/packet-loop.ts): as testRunDurations, keeping each run's action and the first head_len bytes of its output. */
  testRunOutputs: lib.func(
    'int lbctl_test_run_outputs(int prog_fd, const uint8_t *packets, uint32_t len, uint32_t count, uint32_t iterations, _Out_ uint8_t *actions, _Out_ uint8_t *heads, uint32_t head_len)',
  ),
  /** Fuzzing (test/support/fuzz.ts): one run (repeat 1) per frame of a batch of variable-length frames, each output in its own slot of out_stride bytes; action 0xff: skipped (< 14 bytes), 0xfe: refused (errno in out_lengths), 0xfd: no XDP action. Returns the frames run or -errno. */
  testRunBatch: lib.func(
    'int lbctl_test_run_batch(int prog_fd, const uint8_t *frames, const uint32_t *offsets, const uint32_t *lengths, uint32_t count, _Out_ uint8_t *outputs, uint32_t out_stride, _Out_ uint32_t *out_lengths, _Out_ uint8_t *actions)',
  ),
  /** Benchmarks (bench/traffic-gen.ts): live-frame traffic generator; result: a 16-byte buffer, u64 frames sent then u64 ns elapsed. */
  xdpLiveRun: lib.func(
    'int lbctl_xdp_live_run(int prog_fd, const void *frame, uint32_t len, int ingress_ifindex, uint32_t rx_queues, uint32_t repeat, uint32_t batch_size, uint32_t threads, uint32_t duration_ms, uint32_t interval_us, void *result)',
  ),
};
