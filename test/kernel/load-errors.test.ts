/** A program the verifier rejects is reported with the lines that explain why. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { loadBpfObject } from '../../src/dataplane/bpf-object.js';
import { summarizeLoadLog } from '../../src/dataplane/load-log.js';

const dir = mkdtempSync(join(tmpdir(), 'lbctl-verifier-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('a verifier rejection names the program and shows the reason, trimmed', () => {
  // Reads the packet without a bounds check: the verifier must refuse it.
  writeFileSync(
    join(dir, 'bad.bpf.c'),
    `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int unchecked_read(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	return data[40] == 7 ? XDP_DROP : XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
`,
  );
  execFileSync('clang', [
    '-O2',
    '-g',
    '-target',
    'bpf',
    `-I/usr/include/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu`,
    '-c',
    join(dir, 'bad.bpf.c'),
    '-o',
    join(dir, 'bad.bpf.o'),
  ]);
  assert.throws(
    () => loadBpfObject(join(dir, 'bad.bpf.o'), 'unchecked_read'),
    (error: Error) => {
      assert.match(error.message, /^the kernel rejected unchecked_read:/);
      assert.match(error.message, /invalid access to packet/);
      assert.ok(error.message.split('\n').length <= 16, `trimmed to a few lines:\n${error.message}`);
      return true;
    },
  );
});

test('the summary keeps libbpf errors and the end of the verifier log', () => {
  const log = [
    "libbpf: prog 'p': BPF program load failed: Permission denied",
    "libbpf: prog 'p': -- BEGIN PROG LOAD LOG --",
    ...Array.from({ length: 40 }, (_, i) => `${i}: (b7) r0 = ${i}`),
    "R1 invalid mem access 'scalar'",
    'processed 42 insns (limit 1000000) max_states_per_insn 0 total_states 3 peak_states 3 mark_read 1',
    '-- END PROG LOAD LOG --',
    "libbpf: prog 'p': failed to load: -13",
  ].join('\n');
  const summary = summarizeLoadLog(log).split('\n');
  assert.equal(summary[0], "libbpf: prog 'p': BPF program load failed: Permission denied");
  assert.equal(summary.at(-1), "R1 invalid mem access 'scalar'");
  assert.ok(summary.length <= 13);
  assert.ok(!summary.some((line) => line.startsWith('processed')));
});
