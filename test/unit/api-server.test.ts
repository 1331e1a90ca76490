/** The daemon's Unix-socket API: server, client and the line protocol between them. */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { call, DaemonError, DaemonUnreachableError } from '../../src/api/client.js';
import { MAX_LINE_BYTES, type StatusResult } from '../../src/api/protocol.js';
import { ApiServer, type Handlers } from '../../src/daemon/api-server.js';
import { InputError } from '../../src/model/errors.js';

const log = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'lbctl-api-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const STATUS = { pid: 4242, version: 'test', vips: 3 } as unknown as StatusResult;
const received: unknown[] = [];

const handlers: Handlers = {
  status: async () => STATUS,
  stop: async () => ({ stopping: true }),
  'vip.add': async (params) => {
    received.push(params);
    return {
      message: `added ${params.vip} (${params.forward ?? 'default'}, ${params.tableSize ?? '-'})`,
      warnings: ['a warning'],
      applied: true,
    };
  },
  'vip.remove': async (params) => {
    throw new InputError(`unknown VIP ${params.vip}`);
  },
  'vip.list': async () => {
    throw new Error('map update failed: EPERM');
  },
  'backend.add': async (params) => {
    // Slow, so that a later request on the same connection is answered first.
    await new Promise((resolve) => setTimeout(resolve, 100));
    return { message: `slow ${params.address}`, warnings: [], applied: true };
  },
  'backend.remove': async (params) => ({ message: `fast ${params.address}`, warnings: [], applied: true }),
  'backend.weight': async () => {
    throw new Error('not used');
  },
  'backend.drain': async () => {
    throw new Error('not used');
  },
  'backend.undrain': async () => {
    throw new Error('not used');
  },
  explain: async () => {
    throw new Error('not used');
  },
  reload: async () => {
    throw new Error('not used');
  },
  'config.diff': async () => {
    throw new Error('not used');
  },
  'config.export': async () => {
    throw new Error('not used');
  },
  'killswitch.engage': async () => {
    throw new Error('not used');
  },
  'killswitch.release': async () => {
    throw new Error('not used');
  },
  'killswitch.status': async () => {
    throw new Error('not used');
  },
  stats: async () => {
    throw new Error('not used');
  },
  'backend.list': async (params) => {
    received.push(params);
    return [];
  },
};

interface RawResponse {
  id: number;
  result?: unknown;
  error?: { message: string; kind: string };
}

/** Sends raw bytes on a new connection and collects `count` answer lines. */
function raw(socketPath: string, data: string, count = 1): Promise<RawResponse[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let buffer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer; got ${JSON.stringify(buffer)}`));
    }, 5000);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(data));
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      const lines = buffer.split('\n').filter((line) => line !== '');
      if (buffer.endsWith('\n') && lines.length >= count) {
        clearTimeout(timer);
        socket.destroy();
        resolve(lines.map((line) => JSON.parse(line) as RawResponse));
      }
    });
  });
}

describe('ApiServer and call()', () => {
  const socketPath = join(dir, 'run', 'lbctl.sock');
  let server: ApiServer;
  before(async () => {
    server = await ApiServer.listen(socketPath, handlers, log);
  });
  after(async () => {
    if (existsSync(socketPath)) await server.close();
  });

  test('the socket is private to root (mode 0600)', () => {
    const stat = statSync(socketPath);
    assert.ok(stat.isSocket());
    assert.equal(stat.mode & 0o777, 0o600);
  });

  test('a call gets the handler result, with the params it sent', async () => {
    received.length = 0;
    assert.deepEqual(await call(socketPath, 'vip.add', { vip: '10.0.0.1:80/tcp', forward: 'ipip', tableSize: 251 }), {
      message: 'added 10.0.0.1:80/tcp (ipip, 251)',
      warnings: ['a warning'],
      applied: true,
    });
    assert.deepEqual(received, [{ vip: '10.0.0.1:80/tcp', forward: 'ipip', tableSize: 251 }]);
    assert.deepEqual(await call(socketPath, 'status', {}), STATUS);
    assert.deepEqual(await call(socketPath, 'stop', {}), { stopping: true });
  });

  test('an InputError in a handler arrives as an InputError with the same message', async () => {
    await assert.rejects(call(socketPath, 'vip.remove', { vip: '10.9.9.9:80/tcp' }), (error: unknown) => {
      assert.ok(error instanceof InputError, `got ${String(error)}`);
      assert.equal(error.message, 'unknown VIP 10.9.9.9:80/tcp');
      return true;
    });
  });

  test('any other error arrives as an internal DaemonError', async () => {
    await assert.rejects(call(socketPath, 'vip.list', {}), (error: unknown) => {
      assert.ok(error instanceof DaemonError, `got ${String(error)}`);
      assert.ok(!(error instanceof InputError));
      assert.equal(error.kind, 'internal');
      assert.equal(error.message, 'map update failed: EPERM');
      return true;
    });
  });

  test('a line that is not JSON is answered with an input error', async () => {
    assert.deepEqual(await raw(socketPath, '{"id": 3, "method":\n'), [
      { id: 0, error: { message: 'request is not valid JSON', kind: 'input' } },
    ]);
  });

  test('requests that are not well formed are refused with the reason, and the request id', async () => {
    const answers = await raw(
      socketPath,
      [
        JSON.stringify({ id: 5, method: 'vip.explode', params: {} }),
        JSON.stringify({ id: 6, method: 'backend.list', params: [1, 2] }),
        JSON.stringify({ id: 7, method: 'backend.list', params: 'vip' }),
        JSON.stringify({ id: 8, method: 'backend.list', params: null }),
        JSON.stringify({ id: 'nine', method: 'status' }),
        '42',
        '',
      ].join('\n'),
      6,
    );
    const byMessage = (id: number) => answers.find((a) => a.id === id)?.error;
    assert.deepEqual(byMessage(5), { message: 'unknown method "vip.explode"', kind: 'input' });
    assert.deepEqual(byMessage(6), { message: 'params must be a JSON object', kind: 'input' });
    assert.deepEqual(byMessage(7), { message: 'params must be a JSON object', kind: 'input' });
    assert.deepEqual(byMessage(8), { message: 'params must be a JSON object', kind: 'input' });
    // Without a usable id, the answer carries id 0.
    const anonymous = answers
      .filter((a) => a.id === 0)
      .map((a) => a.error?.message)
      .sort();
    assert.deepEqual(anonymous, ['request id must be an integer', 'request must be a JSON object']);
  });

  test('params may be left out', async () => {
    received.length = 0;
    assert.deepEqual(await raw(socketPath, `${JSON.stringify({ id: 11, method: 'backend.list' })}\n`), [{ id: 11, result: [] }]);
    assert.deepEqual(received, [{}]);
  });

  test('a line longer than MAX_LINE_BYTES is refused and the connection closed', async () => {
    const answers = await raw(socketPath, `${'x'.repeat(MAX_LINE_BYTES + 10)}\n`);
    assert.deepEqual(answers, [{ id: 0, error: { message: 'request too long', kind: 'input' } }]);
  });

  test('two requests on one connection get two answers, each with its id', async () => {
    const answers = await raw(
      socketPath,
      [
        JSON.stringify({ id: 21, method: 'backend.add', params: { vip: 'v', address: '10.0.0.21' } }),
        JSON.stringify({ id: 22, method: 'backend.remove', params: { vip: 'v', address: '10.0.0.22' } }),
        '',
      ].join('\n'),
      2,
    );
    // The slow first request is answered last: ids tell the answers apart.
    assert.deepEqual(answers, [
      { id: 22, result: { message: 'fast 10.0.0.22', warnings: [], applied: true } },
      { id: 21, result: { message: 'slow 10.0.0.21', warnings: [], applied: true } },
    ]);
  });

  test('a request split across writes is read whole', async () => {
    const answers = await new Promise<RawResponse[]>((resolve, reject) => {
      const socket = connect(socketPath);
      let buffer = '';
      socket.setEncoding('utf8');
      socket.on('error', reject);
      socket.on('connect', () => {
        socket.write('{"id": 31, "meth');
        setTimeout(() => socket.write('od": "status"}\n'), 50);
      });
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        if (buffer.endsWith('\n')) {
          socket.destroy();
          resolve([JSON.parse(buffer) as RawResponse]);
        }
      });
    });
    assert.deepEqual(answers, [{ id: 31, result: STATUS }]);
  });

  test('close() removes the socket file, after which nobody is listening', async () => {
    await server.close();
    assert.equal(existsSync(socketPath), false);
    await assert.rejects(call(socketPath, 'status', {}), DaemonUnreachableError);
  });
});

/** Resolves when the server closes the connection; with what it said first. */
function closedByServer(socket: ReturnType<typeof connect>): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(text));
  });
}

function connected(path: string): Promise<ReturnType<typeof connect>> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('ApiServer limits: connections, idle and slow clients, clients that leave', () => {
  const limits = { maxConnections: 3, idleTimeoutMs: 300, requestTimeoutMs: 300, maxPendingRequests: 4 };
  const socketPath = join(dir, 'limits.sock');
  const aborted: boolean[] = [];
  let server: ApiServer;
  before(async () => {
    server = await ApiServer.listen(
      socketPath,
      {
        ...handlers,
        // A change that waits for its turn: tells whether its client left meanwhile.
        'backend.weight': async (_params, signal) => {
          await new Promise((resolve) => setTimeout(resolve, 200));
          aborted.push(signal.aborted);
          return { message: 'done', warnings: [], applied: !signal.aborted };
        },
      },
      log,
      limits,
    );
  });
  after(() => server.close());

  test('connections beyond the limit are closed at once and counted; the others keep working', async () => {
    const held = await Promise.all([1, 2, 3].map(() => connected(socketPath)));
    const extra = await connected(socketPath);
    assert.equal(await closedByServer(extra), '', 'closed without an answer');
    assert.equal(server.refusedConnections, 1);
    held[0]!.destroy();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(await call(socketPath, 'status', {}), STATUS, 'a freed place is taken by the next client');
    for (const socket of held) socket.destroy();
  });

  test('an idle connection is closed', async () => {
    const socket = await connected(socketPath);
    assert.equal(await closedByServer(socket), '');
  });

  test('a request that does not end (a byte now and then) is refused and its connection closed', async () => {
    const socket = await connected(socketPath);
    const closed = closedByServer(socket);
    socket.write('{"id": 1, ');
    const drip = setInterval(() => socket.write(' '), 100);
    try {
      const answer = JSON.parse(await closed) as RawResponse;
      assert.deepEqual(answer.error, { message: 'request not complete within 0.3 s', kind: 'input' });
    } finally {
      clearInterval(drip);
    }
  });

  test('a client that leaves while its request waits: the handler knows (a change not started is not made)', async () => {
    aborted.length = 0;
    const socket = await connected(socketPath);
    socket.write(`${JSON.stringify({ id: 1, method: 'backend.weight', params: { vip: 'v', address: 'a', weight: 2 } })}\n`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    socket.destroy();
    assert.equal((await call(socketPath, 'backend.weight', { vip: 'v', address: 'a', weight: 2 })).applied, true);
    assert.deepEqual(aborted, [true, false]);
  });
});

describe('call() without a daemon', () => {
  test('no socket file: the error says no daemon is listening and how to start one', async () => {
    const path = join(dir, 'nothing-here.sock');
    await assert.rejects(call(path, 'status', {}), (error: unknown) => {
      assert.ok(error instanceof DaemonUnreachableError, `got ${String(error)}`);
      assert.match(error.message, new RegExp(`^no lbctl daemon is listening on ${path} \\(start one with: sudo lbctl start`));
      return true;
    });
  });

  test('a socket file nobody listens on gives the same answer', async () => {
    const path = join(dir, 'stale.sock');
    // A Unix socket bound by a process that died without closing it.
    const child = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    assert.equal(child.signal, 'SIGKILL');
    assert.ok(statSync(path).isSocket(), 'the stale socket file is there');
    await assert.rejects(call(path, 'status', {}), /^DaemonUnreachableError: no lbctl daemon is listening/);
  });

  test('listen() replaces a leftover socket file', async () => {
    const path = join(dir, 'leftover.sock');
    writeFileSync(path, 'stale');
    const again = await ApiServer.listen(path, handlers, log);
    try {
      assert.deepEqual(await call(path, 'stop', {}), { stopping: true });
    } finally {
      await again.close();
    }
  });
});
