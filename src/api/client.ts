/** Talking to the daemon over its Unix socket. */
import { connect } from 'node:net';
import { InputError } from '../model/errors.js';
import type { MethodName, Methods, Response } from './protocol.js';

/** Answers can be large (stats of every backend), but not unbounded. */
const MAX_ANSWER_BYTES = 256 * 1024 * 1024;

export class DaemonUnreachableError extends Error {
  override readonly name = 'DaemonUnreachableError';
}

/** An error the daemon reported for a request (its message is for the user). */
export class DaemonError extends Error {
  override readonly name = 'DaemonError';
  constructor(
    message: string,
    readonly kind: 'input' | 'internal',
  ) {
    super(message);
  }
}

export async function call<M extends MethodName>(
  socketPath: string,
  method: M,
  params: Methods[M]['params'],
  timeoutMs = 30_000,
): Promise<Methods[M]['result']> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let buffer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      // The daemon sees the connection close: a change it had not started by then is not made.
      reject(
        new DaemonUnreachableError(
          `the daemon on ${socketPath} did not answer within ${timeoutMs / 1000} s (a change it had not started yet is not made)`,
        ),
      );
    }, timeoutMs);
    const finish = (fn: () => void) => {
      clearTimeout(timer);
      socket.destroy();
      fn();
    };
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify({ id: 1, method, params })}\n`));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_ANSWER_BYTES) return finish(() => reject(new Error('answer from the daemon too long')));
      const newline = buffer.indexOf('\n');
      if (newline < 0) return;
      const response = JSON.parse(buffer.slice(0, newline)) as Response;
      finish(() => {
        if ('error' in response)
          reject(
            response.error.kind === 'input'
              ? new InputError(response.error.message)
              : new DaemonError(response.error.message, response.error.kind),
          );
        else resolve(response.result as Methods[M]['result']);
      });
    });
    socket.on('error', (error: NodeJS.ErrnoException) =>
      finish(() => {
        if (error.code === 'ENOENT' || error.code === 'ECONNREFUSED') {
          reject(
            new DaemonUnreachableError(
              `no lbctl daemon is listening on ${socketPath} (start one with: sudo lbctl start --interface IFACE)`,
            ),
          );
        } else if (error.code === 'EACCES') {
          reject(new DaemonUnreachableError(`permission denied on ${socketPath}: run lbctl as root`));
        } else {
          reject(new DaemonUnreachableError(`cannot reach the daemon on ${socketPath}: ${error.message}`));
        }
      }),
    );
    socket.on('end', () =>
      finish(() => reject(new DaemonUnreachableError(`the daemon on ${socketPath} closed the connection without answering`))),
    );
  });
}
