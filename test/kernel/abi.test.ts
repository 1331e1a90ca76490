import assert from 'node:assert/strict';
import { test } from 'node:test';
import { REASONS, SHARED_LAYOUTS } from '../../src/dataplane/abi.js';
import { readBtfEnum, readBtfStructs } from '../../src/dataplane/btf.js';
import { bpfObjectPath } from '../../src/paths.js';

for (const program of ['xdp_balancer', 'xdp_decap'] as const) {
  test(`TypeScript layouts match the BTF of ${program}`, () => {
    const path = bpfObjectPath(program);
    const used = program === 'xdp_balancer' ? SHARED_LAYOUTS : SHARED_LAYOUTS.filter((l) => l.name === 'traffic_counters');
    const btf = readBtfStructs(
      path,
      used.map((layout) => layout.name),
    );
    for (const layout of used) {
      const actual = btf.get(layout.name)!;
      const expected = {
        name: layout.name,
        size: layout.size,
        members: Object.entries(layout.fields).map(([name, f]) => ({ name, offset: f.offset, size: f.size })),
      };
      assert.deepEqual(
        { ...actual, members: [...actual.members] },
        expected,
        `struct ${layout.name} in bpf/lib/abi.h and src/dataplane/abi.ts disagree`,
      );
    }
  });
}

test('the BTF reader rejects a struct the object does not have', () => {
  assert.throws(() => readBtfStructs(bpfObjectPath('xdp_pass'), ['vip_info']), /struct vip_info is not in the BTF/);
});

// The reasons map is keyed by enum lb_reason, so BTF records it. (The other
// enums' values are checked by what the packet tests see the program do.)
test('the pass/drop reasons mirrored in TypeScript match enum lb_reason', () => {
  const reasons = readBtfEnum(bpfObjectPath('xdp_balancer'), 'lb_reason');
  assert.deepEqual(
    [...reasons].filter(([name]) => name !== 'LB_REASON_MAX'),
    REASONS.map((reason, index) => [`LB_REASON_${reason.toUpperCase()}`, index]),
  );
  assert.equal(reasons.get('LB_REASON_MAX'), REASONS.length);
});
