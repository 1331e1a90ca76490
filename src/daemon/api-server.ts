/** The daemon's side of the Unix-socket API (see src/api/protocol.ts). */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { MAX_LINE_BYTES, METHOD_NAMES, type MethodName, type Methods, type Response } from '../api/protocol.js';
import { InputError, quote } from '../model/errors.js';

export type Handlers = { [M in MethodName]: (params: Methods[M]['params']) => Promise<Methods[M]['result']> };

export class ApiServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly socketPath: string,
    private readonly handlers: Handlers,
    private readonly log: Logger,
  ) {
    this.server = createServer((socket) => this.serve(socket));
  }

  /** Listens on socketPath with mode 0600 (only root may change the balancer). */
  static async listen(socketPath: string, handlers: Handlers, log: Logger): Promise<ApiServer> {
    const api = new ApiServer(socketPath, handlers, log);
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

  private serve(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.setEncoding('utf8');
    let buffer = '';
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (buffer.length > MAX_LINE_BYTES) {
        socket.end(`${JSON.stringify({ id: 0, error: { message: 'request too long', kind: 'input' } })}\n`);
        return;
      }
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        void this.answer(line).then((response) => {
          if (!socket.destroyed) socket.write(`${JSON.stringify(response)}\n`);
        });
      }
    });
  }

  private async answer(line: string): Promise<Response> {
    let id = 0;
    try {
      const request = parseRequest(line, (requestId) => {
        id = requestId;
      });
      const handler = this.handlers[request.method] as (params: unknown) => Promise<unknown>;
      return { id, result: await handler(request.params) };
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
