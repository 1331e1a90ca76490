import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
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

/**
 * Runs a process that logs `lines` lines of about 1 KiB through the
 * default logger (standard output is `stdout`), then prints on stderr
 * whether it got through and how many lines were dropped.
 */
function logInChild(
  stdout: number | 'pipe',
  lines: number,
): Promise<{ code: number | null; report: string; stdout?: NodeJS.ReadableStream }> {
  const module = new URL('../../src/log.js', import.meta.url).href;
  const script = `import { createLogger, droppedLogLines } from ${JSON.stringify(module)};
    const log = createLogger('info', false);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    for (let i = 0; i < ${lines}; i++) log.info({ event: 'test.line', i, pad: 'x'.repeat(1000) }, 'a line');
    setTimeout(() => {
      clearInterval(timer);
      process.stderr.write(JSON.stringify({ done: true, ticks, dropped: droppedLogLines().lines }) + '\\n');
      process.exit(0);
    }, 300);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', stdout, 'pipe'] });
  let report = '';
  child.stderr!.on('data', (chunk: Buffer) => (report += chunk.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, report })));
}

test('a log on a full disk (ENOSPC) drops and counts its lines; the process neither crashes nor stops', async () => {
  const full = openSync('/dev/full', 'w');
  try {
    const { code, report } = await logInChild(full, 2000);
    assert.equal(code, 0, `the process went on: ${report}`);
    const result = JSON.parse(report) as { ticks: number; dropped: number };
    assert.equal(result.dropped, 2000);
    assert.ok(result.ticks > 0, 'its timers kept running');
  } finally {
    closeSync(full);
  }
});

test('a log whose reader stopped reading (a full pipe) drops lines instead of waiting', { timeout: 30_000 }, async () => {
  // Nobody reads the pipe: after its 64 KiB, every write would wait forever.
  const { code, report } = await logInChild('pipe', 20_000);
  assert.equal(code, 0, `the process went on: ${report}`);
  const result = JSON.parse(report) as { dropped: number };
  assert.ok(result.dropped > 10_000, `most of 20 MB was dropped (${result.dropped} lines)`);
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

test('under systemd (stdout is the JOURNAL_STREAM), every line carries its syslog priority for journalctl -p', async () => {
  const lines: string[] = [];
  const log = createLogger('debug', false, { write: (line: string) => lines.push(line) }, true);
  log.debug('d');
  log.info('i');
  log.warn('w');
  log.error('e');
  log.fatal('f');
  assert.deepEqual(
    lines.map((l) => l.slice(0, 3)),
    ['<7>', '<6>', '<4>', '<3>', '<2>'],
  );
  assert.equal(JSON.parse(lines[2]!.slice(3)).msg, 'w', 'the rest of the line is the JSON line');

  // The default logger finds out by itself: JOURNAL_STREAM names its stdout (dev:inode), as systemd sets it.
  const script = `
    import { fstatSync } from 'node:fs';
    const { dev, ino } = fstatSync(1);
    process.env.JOURNAL_STREAM = dev + ':' + ino;
    const { createLogger } = await import(${JSON.stringify(join(PROJECT_ROOT, 'dist', 'src', 'log.js'))});
    createLogger('info', false).warn({ event: 'x.y' }, 'a warning');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await new Promise((resolve) => child.on('close', resolve));
  assert.match(out, /^<4>\{"level":40,.*"msg":"a warning"\}\n$/);
  assert.equal(createLogger('info', false).level, 'info', 'without JOURNAL_STREAM nothing changes');
});
