/**
 * Runs in the lab's client namespace: opens N keep-alive connections to a
 * URL's host:port, and on each sends a request every INTERVAL ms for
 * DURATION ms, checking every answer: same backend as the first, the
 * client port it reports is this connection's. Prints one JSON line with
 * what happened to each connection.
 *
 *   node long-lived.js HOST PORT CONNECTIONS DURATION_MS INTERVAL_MS
 *
 * SIGUSR2 ends the run early: each connection stops after its next answer.
 */
import { connect, type Socket } from 'node:net';

export interface ConnectionReport {
  readonly port: number;
  readonly backend: string | null;
  readonly sent: number;
  readonly answered: number;
  /** First thing that went wrong: a reset, a timeout, a wrong answer. */
  readonly failure: string | null;
}

const ANSWER_TIMEOUT_MS = 2000;
/** Set by SIGUSR2: finish now. */
let stopRequested = false;

function runConnection(
  host: string,
  port: number,
  durationMs: number,
  intervalMs: number,
  onFirstAnswer: () => void,
): Promise<ConnectionReport> {
  return new Promise((resolve) => {
    const socket: Socket = connect({ host, port });
    let backend: string | null = null;
    let localPort = 0;
    let sent = 0;
    let answered = 0;
    let buffer = '';
    let failure: string | null = null;
    let timer: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    let done = false;

    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(deadline);
      socket.end();
      socket.destroy();
      resolve({ port: localPort, backend, sent, answered, failure });
    };
    const fail = (reason: string) => {
      failure ??= reason;
      finish();
    };
    const sendNext = () => {
      if (done) return;
      sent++;
      socket.write(`GET /?seq=${sent} HTTP/1.1\r\nHost: ${host.includes(':') ? `[${host}]` : host}\r\n\r\n`);
      deadline = setTimeout(() => fail(`no answer to message ${sent} within ${ANSWER_TIMEOUT_MS} ms`), ANSWER_TIMEOUT_MS);
    };

    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      localPort = socket.localPort ?? 0;
      const stopAt = Date.now() + durationMs;
      sendNext();
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        for (;;) {
          const headerEnd = buffer.indexOf('\r\n\r\n');
          if (headerEnd < 0) return;
          const length = Number(/content-length: (\d+)/i.exec(buffer.slice(0, headerEnd))?.[1] ?? NaN);
          if (!Number.isFinite(length)) return fail('answer without Content-Length');
          if (buffer.length < headerEnd + 4 + length) return;
          const body = buffer.slice(headerEnd + 4, headerEnd + 4 + length);
          buffer = buffer.slice(headerEnd + 4 + length);
          clearTimeout(deadline);
          const match = /^backend=(\S+) client=\S+ port=(\d+)/.exec(body);
          if (!match) return fail(`unexpected answer: ${body.slice(0, 60)}`);
          if (Number(match[2]) !== localPort) return fail(`answer for port ${match[2]} on connection from ${localPort}`);
          if (backend === null) {
            backend = match[1]!;
            onFirstAnswer();
          }
          if (match[1] !== backend) return fail(`answer from ${match[1]} after ${backend}`);
          answered++;
          if (stopRequested || Date.now() >= stopAt) return finish();
          timer = setTimeout(sendNext, intervalMs);
        }
      });
    });
    socket.on('error', (error: NodeJS.ErrnoException) => fail(error.code ?? error.message));
    socket.on('close', () => {
      if (!done) fail('closed by the other end');
    });
  });
}

if (process.argv[1]?.endsWith('long-lived.js')) {
  const [host, port, connections, durationMs, intervalMs] = process.argv.slice(2);
  if (!host || !port || !connections || !durationMs || !intervalMs) {
    process.stderr.write('usage: node long-lived.js HOST PORT CONNECTIONS DURATION_MS INTERVAL_MS\n');
    process.exit(2);
  }
  process.on('SIGUSR2', () => {
    stopRequested = true;
  });
  let waiting = Number(connections);
  // Every connection has its backend: tell the parent, which then changes backends.
  const opened = () => {
    if (--waiting === 0) process.stderr.write('open\n');
  };
  const runs = Array.from({ length: Number(connections) }, () =>
    runConnection(host, Number(port), Number(durationMs), Number(intervalMs), opened),
  );
  void Promise.all(runs).then((reports) => process.stdout.write(`${JSON.stringify(reports)}\n`));
}
