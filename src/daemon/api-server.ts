/** The daemon's side of the Unix-socket API (see src/api/protocol.ts). */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { MAX_LINE_BYTES, METHOD_NAMES, type MethodName, type Methods, type Response } from '../api/protocol.js';
import { InputError, quote } from '../model/errors.js';

/** `signal` aborts when the client goes away: a change it asked for that has not started yet is not made. */
export type Handlers = { [M in MethodName]: (params: Methods[M]['params'], signal: AbortSignal) => Promise<Methods[M]['result']> };

export interface ApiLimits {
  /** Connections at once; more are closed as they arrive (the CLI opens one per command). */
  readonly maxConnections: number;
  /** A connection with no request in progress and nothing sent for this long is closed. */
  readonly idleTimeoutMs: number;
  /** A request line must be complete this long after its first byte. */
  readonly requestTimeoutMs: number;
  /** Requests of one connection answered at once; the connection is not read further meanwhile. */
  readonly maxPendingRequests: number;
}

export const DEFAULT_API_LIMITS: ApiLimits = {
  maxConnections: 64,
  idleTimeoutMs: 60_000,
  requestTimeoutMs: 10_000,
  maxPendingRequests: 16,
};

/** At most one api.connections_refused line this often. */
const REFUSED_LOG_MS = 60_000;

export class ApiServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  /** Connections closed because maxConnections were open. */
  refusedConnections = 0;
  private refusedLoggedAt = -Infinity;

  private constructor(
    private readonly socketPath: string,
    private readonly handlers: Handlers,
    private readonly log: Logger,
    private readonly limits: ApiLimits,
  ) {
    this.server = createServer((socket) => this.serve(socket));
    this.server.maxConnections = limits.maxConnections;
    this.server.on('drop', () => this.refused());
  }

  /** Listens on socketPath with mode 0600 (only root may change the balancer). */
  static async listen(socketPath: string, handlers: Handlers, log: Logger, limits: ApiLimits = DEFAULT_API_LIMITS): Promise<ApiServer> {
    const api = new ApiServer(socketPath, handlers, log, limits);
    mkdirSync(dirname(socketPath), { recursive: true, mode: 0o755 });
    rmSync(socketPath, { force: true });
    const previousUmask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        api.server.once('error', reject);
        api.server.listen(socketPath, () => resolve());
      });
    } finally {
      process.umask(previousUmask);
    }
    chmodSync(socketPath, 0o600);
    return api;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.socketPath, { force: true });
  }

  private refused(): void {
    this.refusedConnections++;
    const now = Date.now();
    if (now - this.refusedLoggedAt < REFUSED_LOG_MS) return;
    this.refusedLoggedAt = now;
    this.log.warn(
      { event: 'api.connections_refused', maxConnections: this.limits.maxConnections, refused: this.refusedConnections },
      `API connection refused: ${this.limits.maxConnections} are open already`,
    );
  }

  private serve(socket: Socket): void {
    const { idleTimeoutMs, requestTimeoutMs, maxPendingRequests } = this.limits;
    const gone = new AbortController();
    this.sockets.add(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      gone.abort();
    });
    socket.on('error', () => socket.destroy());
    socket.setEncoding('utf8');
    // Idle: nothing asked and nothing in progress. A request in progress may take long (a reload).
    socket.setTimeout(idleTimeoutMs, () => socket.destroy());
    let buffer = '';
    let pending = 0;
    let lineTimer: NodeJS.Timeout | undefined;
    const refuse = (message: string) => {
      socket.end(`${JSON.stringify({ id: 0, error: { message, kind: 'input' } })}\n`);
      setTimeout(() => socket.destroy(), 1000).unref();
    };
    socket.on('close', () => clearTimeout(lineTimer));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_LINE_BYTES) {
        refuse('request too long');
        return;
      }
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        clearTimeout(lineTimer);
        lineTimer = undefined;
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (pending++ === 0) socket.setTimeout(0);
        if (pending >= maxPendingRequests) socket.pause();
        void this.answer(line, gone.signal).then((response) => {
          if (socket.destroyed) return;
          socket.write(`${JSON.stringify(response)}\n`);
          if (--pending === 0) socket.setTimeout(idleTimeoutMs);
          if (pending < maxPendingRequests) socket.resume();
        });
      }
      // A line begun must end in time (from its first byte): a client sending a byte now and then does not hold a connection forever.
      if (buffer.length > 0) {
        lineTimer ??= setTimeout(() => refuse(`request not complete within ${requestTimeoutMs / 1000} s`), requestTimeoutMs);
      }
    });
  }

  private async answer(line: string, signal: AbortSignal): Promise<Response> {
    let id = 0;
    try {
      const request = parseRequest(line, (requestId) => {
        id = requestId;
      });
      const handler = this.handlers[request.method] as (params: unknown, signal: AbortSignal) => Promise<unknown>;
      return { id, result: await handler(request.params, signal) };
    } catch (error) {
      if (error instanceof InputError) return { id, error: { message: error.message, kind: 'input' } };
      this.log.error({ event: 'api.failed', err: error }, 'API request failed');
      return { id, error: { message: (error as Error).message, kind: 'internal' } };
    }
  }
}

/** Reports the id through onId as soon as it is valid, so that later errors are answered with it. */
function parseRequest(line: string, onId: (id: number) => void): { id: number; method: MethodName; params: unknown } {
  let request: unknown;
  try {
    request = JSON.parse(line);
  } catch {
    throw new InputError('request is not valid JSON');
  }
  if (typeof request !== 'object' || request === null || Array.isArray(request)) throw new InputError('request must be a JSON object');
  const { id, method, params } = request as Record<string, unknown>;
  if (typeof id !== 'number' || !Number.isInteger(id)) throw new InputError('request id must be an integer');
  onId(id);
  if (typeof method !== 'string' || !METHOD_NAMES.includes(method as MethodName))
    throw new InputError(`unknown method ${typeof method === 'string' ? quote(method) : quote(JSON.stringify(method) ?? String(method))}`);
  if (params !== undefined && (typeof params !== 'object' || params === null || Array.isArray(params)))
    throw new InputError('params must be a JSON object');
  return { id, method: method as MethodName, params: params ?? {} };
}
