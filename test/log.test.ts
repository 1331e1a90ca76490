import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../src/log.js';

function capture(human: boolean): { lines: () => string[]; log: ReturnType<typeof createLogger> } {
  const sink = new PassThrough();
  let text = '';
  sink.on('data', (chunk: Buffer) => { text += chunk.toString(); });
  return { log: createLogger('info', human, sink), lines: () => text.split('\n').filter((l) => l !== '') };
}

test('logs are JSON lines with stable fields for machines', async () => {
  const { log, lines } = capture(false);
  log.info({ vip: '10.0.0.100:80/tcp', backend: '10.0.0.11' }, 'backend added');
  log.debug('not at info level');
  await new Promise((r) => setImmediate(r));
  assert.equal(lines().length, 1);
  const entry = JSON.parse(lines()[0]!);
  assert.equal(entry.level, 30);
  assert.equal(entry.msg, 'backend added');
  assert.equal(entry.vip, '10.0.0.100:80/tcp');
  assert.match(entry.time, /^\d{4}-\d\d-\d\dT/);
  assert.equal(entry.pid, process.pid);
});

test('logs are readable lines for people at a terminal', async () => {
  const { log, lines } = capture(true);
  log.warn({ backend: '10.0.0.11' }, 'backend has no usable path');
  await new Promise((r) => setImmediate(r));
  const text = lines().join('\n');
  assert.throws(() => JSON.parse(lines()[0]!));
  assert.match(text, /WARN.*backend has no usable path/);
  assert.match(text, /backend: "10\.0\.0\.11"/);
});
