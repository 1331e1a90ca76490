/**
 * The read-only HTTP endpoint next to the daemon: /metrics for Prometheus,
 * / for people (the status page), /stats.json for the page and for scripts.
 * Only GET and HEAD; nothing here changes state.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { formatListenAddress, type ListenAddress } from '../model/address.js';
import { InputError } from '../model/errors.js';
import { type BalancerMetrics, type MetricsSnapshot } from './prometheus.js';
import { statusPage } from './status-page.js';

export class MetricsServer {
  private constructor(
    private readonly server: Server,
    readonly address: ListenAddress,
  ) {}

  static async listen(
    address: ListenAddress,
    metrics: BalancerMetrics,
    snapshot: () => MetricsSnapshot,
    log: Logger,
  ): Promise<MetricsServer> {
    const server = createServer((request, response) => {
      void handle(request, response, metrics, snapshot).catch((error) => {
        log.error({ event: 'metrics.failed', err: error, url: request.url }, 'metrics request failed');
        if (!response.headersSent) response.writeHead(500, { 'content-type': 'text/plain' });
        response.end('internal error\n');
      });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        const where = formatListenAddress(address);
        reject(
          error.code === 'EADDRINUSE'
            ? new InputError(`cannot serve metrics on ${where}: the address is in use`)
            : error.code === 'EADDRNOTAVAIL'
              ? new InputError(`cannot serve metrics on ${where}: no interface has that address`)
              : error,
        );
      });
      server.listen(address.port, address.host, () => resolve());
    });
    const bound = server.address();
    const actual = bound && typeof bound === 'object' ? { host: address.host, port: bound.port } : address;
    log.info(
      { event: 'metrics.listening', address: formatListenAddress(actual) },
      `metrics and status page on http://${formatListenAddress(actual)}/`,
    );
    return new MetricsServer(server, actual);
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

async function handle(
  request: IncomingMessage,
  response: ServerResponse,
  metrics: BalancerMetrics,
  snapshot: () => MetricsSnapshot,
): Promise<void> {
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
    response.end('read-only: GET or HEAD\n');
    return;
  }
  const path = new URL(request.url ?? '/', 'http://localhost').pathname;
  const send = (type: string, body: string) => {
    response.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
    response.end(request.method === 'HEAD' ? undefined : body);
  };
  switch (path) {
    case '/metrics':
      send(metrics.registry.contentType, await metrics.scrape(snapshot()));
      return;
    case '/':
      send('text/html; charset=utf-8', statusPage(snapshot()));
      return;
    case '/stats.json':
      send('application/json', JSON.stringify(snapshot()));
      return;
    default:
      response.writeHead(404, { 'content-type': 'text/plain' });
      response.end('not found: try /, /metrics or /stats.json\n');
  }
}
