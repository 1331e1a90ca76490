import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/log.js';
import { PROJECT_ROOT } from '../../src/paths.js';

function capture(human: boolean): { lines: () => string[]; log: ReturnType<typeof createLogger> } {
  const sink = new PassThrough();
  let text = '';
  sink.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
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

test('every log line of the daemon names its event, and docs/observability.md lists every event', () => {
  const sources: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith('.ts')) sources.push(path);
    }
  };
  walk(join(PROJECT_ROOT, 'src'));
  const docs = readFileSync(join(PROJECT_ROOT, 'docs', 'observability.md'), 'utf8');
  const events = new Set<string>();
  const missing: string[] = [];
  for (const path of sources) {
    const text = readFileSync(path, 'utf8');
    for (const call of text.matchAll(/\blog\.(?:trace|debug|info|warn|error|fatal)\(/g)) {
      // The first argument: up to the message string that follows the fields object.
      const head = text.slice(call.index, call.index + 1500);
      const literal = /^[^(]*\(\s*\{([\s\S]*?)\}\s*,/.exec(head)?.[1];
      // Or a variable: `const fields = { event: ..., ... };` earlier in the file.
      const variable = /^[^(]*\(\s*(\w+)\s*,/.exec(head)?.[1];
      const declared = variable ? new RegExp(`const ${variable} = \\{([^}]*)\\}`).exec(text.slice(0, call.index))?.[1] : undefined;
      const fields = literal ?? declared ?? '';
      const names = [...fields.matchAll(/'([a-z]+\.[a-z_]+)'/g)].map((m) => m[1]!);
      if (!/\bevent:/.test(fields) || names.length === 0)
        missing.push(`${relative(PROJECT_ROOT, path)}:${text.slice(0, call.index).split('\n').length}`);
      for (const name of names) events.add(name);
    }
  }
  assert.deepEqual(missing, [], 'log calls without an event field');
  assert.ok(events.size >= 30, `found ${events.size} events`);
  const undocumented = [...events].filter((name) => !docs.includes(`\`${name}\``));
  assert.deepEqual(undocumented, [], 'events missing from docs/observability.md');
});
