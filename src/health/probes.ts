/**
 * One health probe per check kind. Every probe resolves (never rejects)
 * within its timeout with { ok: true } or { ok: false, reason } where the
 * reason is short and specific ("connection refused", "HTTP 503", ...).
 * An AbortSignal ends a probe at once (its sockets closed) with the reason
 * "cancelled". A probe the balancer itself could not run (no file
 * descriptor, memory or local port left) says so with `local`: that is no
 * verdict on the backend.
 */
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { VipAddress } from '../model/address.js';
import type { CheckSettings } from '../model/check.js';

export type ProbeResult =
  | { readonly ok: true }
  | {
      readonly ok: false;
      readonly reason: string;
      /** The balancer could not run the probe (its own resources ran out): says nothing about the backend. */
      readonly local?: true;
    };

export interface ProbeOptions {
  /** The backend's address (IPv4 or IPv6). */
  readonly address: string;
  readonly port: number;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

export interface HttpProbeOptions extends ProbeOptions {
  /** The request path, starts with '/'. */
  readonly path: string;
  /** The Host header: the VIP's address. */
  readonly host: string;
  /** Exact status expected; default any of 200-399. */
  readonly expectStatus?: number;
}

export interface DnsProbeOptions extends ProbeOptions {
  /** The query name; '.' is the root. */
  readonly name: string;
}

const OK: ProbeResult = { ok: true };
/** Bytes of a response body read (and discarded) before the connection is closed. */
export const HTTP_BODY_LIMIT = 64 * 1024;

const fail = (reason: string): ProbeResult => ({ ok: false, reason });

/**
 * Errors of the balancer's own resources: out of file descriptors (the
 * process's or the system's), memory, socket buffers, or local ports
 * (EADDRNOTAVAIL on connect). They say nothing about the backend.
 */
const LOCAL_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'ENOBUFS', 'EADDRNOTAVAIL', 'EAGAIN']);

export function isLocalError(error: unknown): boolean {
  return LOCAL_ERRORS.has((error as NodeJS.ErrnoException)?.code ?? '');
}

/** A failed probe: the backend's fault, or (a local error) nobody's verdict. */
export function failure(error: unknown): ProbeResult {
  const reason = errorReason(error);
  return isLocalError(error) ? { ok: false, reason: `the balancer could not probe: ${reason}`, local: true } : fail(reason);
}

/**
 * Runs one probe: `start` opens what it needs and calls `finish` once it
 * knows the answer; it returns the function that closes everything. The
 * timeout resolves with `onTimeout` (a failure by default).
 */
function attempt(
  options: ProbeOptions,
  start: (finish: (result: ProbeResult) => void) => () => void,
  onTimeout: ProbeResult = fail(`timeout after ${options.timeoutMs} ms`),
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    if (options.signal?.aborted) {
      resolve(fail('cancelled'));
      return;
    }
    let done = false;
    let cleanup: (() => void) | undefined;
    const onAbort = () => finish(fail('cancelled'));
    const timer = setTimeout(() => finish(onTimeout), options.timeoutMs);
    function finish(result: ProbeResult): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      try {
        cleanup?.();
      } catch {
        // closing twice, or a socket that never opened: nothing to undo
      }
      resolve(result);
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const close = start(finish);
      if (done) close();
      else cleanup = close;
    } catch (error) {
      finish(failure(error));
    }
  });
}

/** A short reason for a socket error. */
export function errorReason(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
      return e.message === 'socket hang up' ? 'connection closed without a response' : 'connection reset';
    case 'EHOSTUNREACH':
      return 'no route to host';
    case 'ENETUNREACH':
      return 'network unreachable';
    case 'EHOSTDOWN':
      return 'host is down';
    case 'ENETDOWN':
      return 'network is down';
    case 'EADDRNOTAVAIL':
      return 'no local address or port available';
    case 'EMFILE':
      return 'too many open files';
    case 'ENFILE':
      return 'too many open files in the system';
    case 'ENOMEM':
    case 'ENOBUFS':
      return 'out of memory';
    case 'EACCES':
    case 'EPERM':
      return 'not permitted (a firewall rule?)';
    case 'EPIPE':
      return 'connection closed by the backend';
    case 'ETIMEDOUT':
      return 'connection timed out';
    default:
      if (typeof e?.code === 'string' && e.code.startsWith('HPE_')) return `invalid HTTP response (${e.code})`;
      if (typeof e?.code === 'string') return `${e.code}: ${e.message}`;
      return e?.message ?? String(error);
  }
}

/** Connects and closes at once (with a reset: no TIME_WAIT left behind on the balancer). */
export function tcpProbe(options: ProbeOptions): Promise<ProbeResult> {
  return attempt(options, (finish) => {
    const socket = net.connect({ host: options.address, port: options.port });
    socket.once('connect', () => finish(OK));
    socket.on('error', (error) => finish(failure(error)));
    return () => {
      if (socket.readyState === 'open') socket.resetAndDestroy();
      else socket.destroy();
    };
  });
}

/** GET path with Host: <VIP>, Connection: close; ok iff the status is the expected one (any 200-399 by default). */
export function httpProbe(options: HttpProbeOptions): Promise<ProbeResult> {
  return requestProbe(options, false);
}

/** httpProbe over TLS; the certificate is not verified (backends are probed by address). */
export function httpsProbe(options: HttpProbeOptions): Promise<ProbeResult> {
  return requestProbe(options, true);
}

function requestProbe(options: HttpProbeOptions, tls: boolean): Promise<ProbeResult> {
  return attempt(options, (finish) => {
    const host = net.isIPv6(options.host) ? `[${options.host}]` : options.host;
    const common = {
      host: options.address,
      port: options.port,
      path: options.path,
      method: 'GET',
      agent: false as const,
      headers: { Host: host, Connection: 'close', Accept: '*/*' },
    };
    let connected = false;
    let handshaken = false;
    const req = tls ? https.request({ ...common, rejectUnauthorized: false }) : http.request(common);
    req.on('socket', (socket) => {
      socket.once('connect', () => (connected = true));
      if (tls) (socket as TLSSocket).once('secureConnect', () => (handshaken = true));
    });
    req.on('error', (error) => {
      if (tls && connected && !handshaken) finish(fail(`TLS handshake failed: ${tlsErrorText(error)}`));
      else finish(failure(error));
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const good = options.expectStatus !== undefined ? status === options.expectStatus : status >= 200 && status <= 399;
      const verdict = good
        ? OK
        : fail(options.expectStatus !== undefined ? `HTTP ${status}, expected ${options.expectStatus}` : `HTTP ${status}`);
      let read = 0;
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read >= HTTP_BODY_LIMIT) finish(verdict);
      });
      res.on('end', () => finish(verdict));
      // The status decided; a body cut short does not change that.
      res.on('error', () => finish(verdict));
      res.on('aborted', () => finish(verdict));
    });
    req.end();
    return () => req.destroy();
  });
}

function tlsErrorText(error: unknown): string {
  const e = error as NodeJS.ErrnoException & { reason?: string };
  if (e?.code === 'ECONNRESET') return 'connection reset';
  // OpenSSL messages look like "...:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:..."
  const routine = /SSL routines:[^:]*:([^:\n]+)/.exec(e?.message ?? '');
  return e?.reason ?? routine?.[1] ?? e?.message ?? String(error);
}

const RCODES: Record<number, string> = {
  0: 'NOERROR',
  1: 'FORMERR',
  2: 'SERVFAIL',
  3: 'NXDOMAIN',
  4: 'NOTIMP',
  5: 'REFUSED',
  6: 'YXDOMAIN',
  7: 'YXRRSET',
  8: 'NXRRSET',
  9: 'NOTAUTH',
  10: 'NOTZONE',
};

/** A DNS query: type A, class IN, RD=0, the given id. */
export function dnsQuery(name: string, id: number): Buffer {
  const labels = name === '.' ? [] : name.replace(/\.$/, '').split('.');
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0000, 2); // QR=0, opcode QUERY, RD=0
  header.writeUInt16BE(1, 4); // QDCOUNT
  const parts = [header];
  for (const label of labels) parts.push(Buffer.from([label.length]), Buffer.from(label, 'ascii'));
  parts.push(Buffer.from([0, 0, 1, 0, 1])); // root, QTYPE A, QCLASS IN
  return Buffer.concat(parts);
}

/**
 * Sends a DNS query over UDP; ok iff a response with the query's id and
 * QR=1 carries NOERROR or NXDOMAIN (the server answers: whether the name
 * exists is not the point). Other rcodes fail with their name.
 */
export function dnsProbe(options: DnsProbeOptions): Promise<ProbeResult> {
  return attempt(options, (finish) => {
    const id = randomInt(0, 0x10000);
    const socket = dgram.createSocket(net.isIPv6(options.address) ? 'udp6' : 'udp4');
    socket.on('error', (error) =>
      finish((error as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? fail('port unreachable') : failure(error)),
    );
    socket.on('message', (message) => {
      if (message.length < 12 || message.readUInt16BE(0) !== id) return; // not ours: keep waiting
      const flags = message.readUInt16BE(2);
      if ((flags & 0x8000) === 0) return; // a query, not a response
      const rcode = flags & 0x000f;
      finish(rcode === 0 || rcode === 3 ? OK : fail(`DNS ${RCODES[rcode] ?? `RCODE ${rcode}`}`));
    });
    socket.connect(options.port, options.address, () => {
      try {
        socket.send(dnsQuery(options.name, id), (error) => {
          if (error) finish((error as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? fail('port unreachable') : failure(error));
        });
      } catch {
        // closed meanwhile (timeout or cancel): the result is already out
      }
    });
    return () => socket.close();
  });
}

/**
 * Sends an empty datagram on a connected UDP socket. The semantics are
 * keepalived's UDP_CHECK: an ICMP port unreachable (ECONNREFUSED on the
 * socket) is a failure ("port unreachable"); a reply, or silence until the
 * timeout, counts as success, because most UDP services ignore a datagram
 * they cannot parse and the only signal a generic probe gets is the
 * kernel's "nobody listens here". Use a dns check for a real answer.
 */
export function udpProbe(options: ProbeOptions): Promise<ProbeResult> {
  return attempt(
    options,
    (finish) => {
      const socket = dgram.createSocket(net.isIPv6(options.address) ? 'udp6' : 'udp4');
      socket.on('error', (error) =>
        finish((error as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? fail('port unreachable') : failure(error)),
      );
      socket.on('message', () => finish(OK));
      socket.connect(options.port, options.address, () => {
        try {
          socket.send(Buffer.alloc(0), (error) => {
            if (error) finish((error as NodeJS.ErrnoException).code === 'ECONNREFUSED' ? fail('port unreachable') : failure(error));
          });
        } catch {
          // closed meanwhile (timeout or cancel): the result is already out
        }
      });
      return () => socket.close();
    },
    OK,
  );
}

/** Check kind none: always ok. */
export function noneProbe(): Promise<ProbeResult> {
  return Promise.resolve(OK);
}

/** The regular probe of a backend (not the DSR-path one) for the given settings. */
export function runProbe(vip: VipAddress, address: string, settings: CheckSettings, signal?: AbortSignal): Promise<ProbeResult> {
  const base: ProbeOptions = { address, port: settings.port ?? vip.port, timeoutMs: settings.timeoutMs, ...(signal ? { signal } : {}) };
  const { spec } = settings;
  switch (spec.kind) {
    case 'tcp':
      return tcpProbe(base);
    case 'http':
    case 'https': {
      const options: HttpProbeOptions = {
        ...base,
        path: spec.path ?? '/',
        host: vip.address,
        ...(settings.expectStatus !== undefined ? { expectStatus: settings.expectStatus } : {}),
      };
      return spec.kind === 'http' ? httpProbe(options) : httpsProbe(options);
    }
    case 'dns':
      return dnsProbe({ ...base, name: spec.name ?? '.' });
    case 'udp':
      return udpProbe(base);
    case 'none':
      return noneProbe();
  }
}
