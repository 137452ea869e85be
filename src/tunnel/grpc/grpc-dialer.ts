import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { endpointName, type ProxyEndpoint } from '../connect-dialer.ts';
import { DialError, isDialError, isNoCommonProtocol, isTlsError, type DialTarget, type Dialer } from '../dialer.ts';
import { GrpcTunnel, UnsentDial } from './grpc-tunnel.ts';

export interface GrpcDialerOptions {
  endpoint: ProxyEndpoint;
  /** mTLS context for the proxy-server (TCP only); read per connection so that rotated files apply to new ones. */
  proxyTls: () => tls.SecureContext | undefined;
  /** HTTP/2 connections kept to the proxy-server; tunnels are streams spread over them. */
  connections: number;
  /** HTTP/2 PING interval while a connection carries tunnels; 0 disables. ANP's frontend refuses < 5 min. */
  keepaliveIntervalMs: number;
  /** Covers reaching the proxy-server (when no connection is up) and waiting for the agent's DIAL_RSP. */
  connectTimeoutMs: number;
  /** Retry-After sent with 503 when the cluster's agent is not connected. */
  agentRetryAfterSeconds: number;
  /** A tunnel whose reader leaves it full this long is aborted (see GrpcTunnel); 0 disables. */
  stallTimeoutMs: number;
  /** Called when a connection opens or goes away, with the number now open. */
  onConnections?: (open: number) => void;
}

/** Per-tunnel receive window: bulk data flows without waiting for window updates on loopback or a LAN. */
const STREAM_WINDOW_BYTES = 1024 * 1024;
/** Connection window: Node gives it back as data arrives, so it only has to cover what is in flight. */
const CONNECTION_WINDOW_BYTES = 32 * 1024 * 1024;
/** Data buffered in a tunnel for a slow reader beyond the stream window, before the stream is paused. */
const READ_BUFFER_BYTES = 64 * 1024;
/** A keepalive PING unanswered this long means the connection is dead. */
const PING_TIMEOUT_MS = 20_000;
/** How long a closing connection may finish its tunnels before it is destroyed. */
const CLOSE_GRACE_MS = 2_000;

const pendingRandoms = new Set<bigint>();

/**
 * A 63-bit crypto-random dial id, unique among this process's pending dials: the proxy-server keeps one
 * map of pending dials for all its clients, keyed by this number, so a counter would collide across
 * user-server replicas.
 */
function newRandom(): bigint {
  for (;;) {
    const r = randomBytes(8).readBigUInt64BE() & 0x7fff_ffff_ffff_ffffn;
    if (r !== 0n && !pendingRandoms.has(r)) return r;
  }
}

class ProxyConnection {
  readonly session: http2.ClientHttp2Session;
  /** Resolves once the HTTP/2 connection is up; rejects with the DialError that kept it from coming up. */
  readonly ready: Promise<void>;
  tunnels = 0;
  /** GOAWAY received or failed: takes no new tunnels; its open tunnels go on until they end. */
  retired = false;
  private pingTimer: NodeJS.Timeout | undefined;

  constructor(session: http2.ClientHttp2Session, ready: Promise<void>) {
    this.session = session;
    this.ready = ready;
  }

  startKeepalive(intervalMs: number): void {
    if (intervalMs <= 0) return;
    // grpc-go counts a PING without open streams against the client (PermitWithoutStream is off), so
    // only a connection that carries tunnels is pinged.
    this.pingTimer = setInterval(() => {
      if (this.tunnels === 0 || this.session.destroyed) return;
      const timeout = setTimeout(() => this.session.destroy(new Error(`keepalive PING unanswered for ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS);
      timeout.unref();
      const sent = this.session.ping((err) => {
        clearTimeout(timeout);
        if (err !== null && !this.session.destroyed) this.session.destroy(err);
      });
      if (!sent) clearTimeout(timeout);
    }, intervalMs);
    this.pingTimer.unref();
  }

  stopKeepalive(): void {
    clearInterval(this.pingTimer);
  }
}

/**
 * ANP's gRPC frontend (`ProxyService/Proxy`, the proxy-server's default mode and what stock ACM and OCM
 * run): each tunnel is one bidirectional gRPC stream. Unlike the Go user-server, which opens a gRPC
 * connection per request, a small bounded set of HTTP/2 connections carries all tunnels; the set fills up
 * before streams share a connection, so that behind a Service the connections reach different
 * proxy-server replicas. A connection that gets GOAWAY or fails is replaced for new tunnels, and only the
 * tunnels it carried are affected.
 */
export class GrpcDialer implements Dialer {
  private readonly opts: GrpcDialerOptions;
  private readonly proxyName: string;
  private readonly live: ProxyConnection[] = [];
  private readonly all = new Set<ProxyConnection>();
  private next = 0;
  private closed = false;

  constructor(opts: GrpcDialerOptions) {
    this.opts = opts;
    this.proxyName = endpointName(opts.endpoint);
  }

  /** Connections open or opening (retired ones still finishing their tunnels included). */
  get connectionCount(): number {
    return this.all.size;
  }

  async dial(target: DialTarget, signal?: AbortSignal): Promise<Duplex> {
    if (this.closed) throw new DialError('aborted', 'the user-server is shutting down');
    const deadline = performance.now() + this.opts.connectTimeoutMs;
    const first = this.pick(undefined);
    try {
      return await this.dialOn(first, target, deadline, signal);
    } catch (err) {
      // Replicas learn of a (re)connected agent one by one: another replica may know it already. A
      // refused stream (the connection was going away) was never seen by the server, and a connection
      // that never came up sent nothing: behind a Service the next one may reach a live replica.
      if (!(err instanceof UnsentDial) && (!isDialError(err) || err.outcome !== 'agent_unavailable')) throw err;
      const other = this.pick(first);
      if (other === undefined || performance.now() >= deadline) throw err;
      return await this.dialOn(other, target, deadline, signal);
    }
  }

  close(): void {
    this.closed = true;
    for (const c of this.all) {
      c.stopKeepalive();
      c.session.close();
      setTimeout(() => c.session.destroy(), CLOSE_GRACE_MS).unref();
    }
  }

  /**
   * A connection for a new tunnel, other than `exclude`: a new one while the set is not full, else the
   * live one carrying the fewest tunnels (round robin among equals). With `exclude`, undefined when the
   * set has no other connection and is full.
   */
  private pick(exclude: ProxyConnection): ProxyConnection | undefined;
  private pick(exclude: undefined): ProxyConnection;
  private pick(exclude: ProxyConnection | undefined): ProxyConnection | undefined {
    if (this.live.length < this.opts.connections) return this.connect();
    let best: ProxyConnection | undefined;
    const n = this.live.length;
    for (let i = 0; i < n; i++) {
      const c = this.live[(this.next + i) % n]!;
      if (c === exclude) continue;
      if (best === undefined || c.tunnels < best.tunnels) best = c;
    }
    this.next = (this.next + 1) % n;
    return best;
  }

  private connect(): ProxyConnection {
    const endpoint = this.opts.endpoint;
    const authority = endpoint.transport === 'tcp' ? `https://${endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}` : 'http://localhost';
    const session = http2.connect(authority, {
      createConnection: () =>
        endpoint.transport === 'tcp'
          ? tls.connect({
              host: endpoint.host,
              port: endpoint.port,
              servername: net.isIP(endpoint.servername) === 0 ? endpoint.servername : undefined,
              secureContext: this.opts.proxyTls(),
              // grpc-go 1.67+ refuses clients that do not offer h2.
              ALPNProtocols: ['h2'],
              noDelay: true,
              keepAlive: true,
              keepAliveInitialDelay: 30_000,
            } as tls.ConnectionOptions)
          : net.connect({ path: endpoint.path, noDelay: true }),
      settings: { enablePush: false, initialWindowSize: STREAM_WINDOW_BYTES },
      // Until the server's SETTINGS arrive (grpc-go allows unlimited streams), Node would assume 100.
      peerMaxConcurrentStreams: 1 << 20,
      // Streams of slow readers hold received data; the default 10 MB would fail the whole connection.
      maxSessionMemory: 1024,
    });
    let connected = false;
    let failure: DialError | undefined;
    const ready = new Promise<void>((resolve, reject) => {
      session.once('connect', () => {
        connected = true;
        session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
        resolve();
      });
      session.once('close', () => reject(failure ?? new DialError('proxy_unreachable', `the connection to the ANP proxy-server at ${this.proxyName} closed before it was up`)));
    });
    // Only dials wait on `ready`; a connection that fails with nobody waiting must not be unhandled.
    ready.catch(() => {});
    const conn = new ProxyConnection(session, ready);
    session.on('error', (err: NodeJS.ErrnoException) => {
      failure = this.connectionFailure(err, connected);
    });
    session.on('goaway', () => this.retire(conn));
    session.once('close', () => {
      conn.stopKeepalive();
      this.retire(conn);
      this.all.delete(conn);
      this.opts.onConnections?.(this.all.size);
    });
    session.unref();
    this.live.push(conn);
    this.all.add(conn);
    this.opts.onConnections?.(this.all.size);
    conn.startKeepalive(this.opts.keepaliveIntervalMs);
    return conn;
  }

  private retire(conn: ProxyConnection): void {
    conn.retired = true;
    const i = this.live.indexOf(conn);
    if (i !== -1) this.live.splice(i, 1);
  }

  private connectionFailure(err: NodeJS.ErrnoException, connected: boolean): DialError {
    if (isTlsError(err)) {
      const hint = isNoCommonProtocol(err) ? ' (the proxy-server offers no h2: is it in http-connect mode? then use --proxy-mode=http-connect)' : '';
      return new DialError('proxy_tls_failed', `TLS to the ANP proxy-server at ${this.proxyName} failed: ${err.message}${hint}`, { cause: err });
    }
    if (!connected) return new DialError('proxy_unreachable', `cannot reach the ANP proxy-server at ${this.proxyName}: ${err.message}`, { cause: err });
    return new DialError('proxy_protocol_error', `the HTTP/2 connection to the ANP proxy-server at ${this.proxyName} failed: ${err.message}`, { cause: err });
  }

  private async dialOn(conn: ProxyConnection, target: DialTarget, deadline: number, signal: AbortSignal | undefined): Promise<Duplex> {
    const random = newRandom();
    pendingRandoms.add(random);
    let tunnel: GrpcTunnel | undefined;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      return await new Promise<Duplex>((resolve, reject) => {
        const fail = (err: DialError): void => {
          if (tunnel !== undefined) tunnel.abandon(err);
          reject(err);
        };
        timer = setTimeout(() => {
          if (tunnel === undefined) {
            // The connection never came up in time: it is broken, not merely slow.
            conn.session.destroy();
            fail(new DialError('proxy_timeout', `could not connect to the ANP proxy-server at ${this.proxyName} within ${this.opts.connectTimeoutMs} ms`));
          } else {
            // No DIAL_RSP: the agent is stuck, or died during the dial (the server then never answers).
            fail(new DialError('agent_dial_timeout', `the ANP proxy-server at ${this.proxyName} did not answer the dial of ${target.host}:${target.port} within ${this.opts.connectTimeoutMs} ms`));
          }
        }, Math.max(0, deadline - performance.now()));
        onAbort = () => fail(new DialError('aborted', 'the request was cancelled while the tunnel was being opened'));
        if (signal?.aborted) {
          onAbort();
          return;
        }
        signal?.addEventListener('abort', onAbort, { once: true });
        conn.ready.then(() => {
          if (conn.session.destroyed || conn.session.closed) {
            reject(new UnsentDial('proxy_unreachable', `the connection to the ANP proxy-server at ${this.proxyName} went away`));
            return;
          }
          if (signal?.aborted || performance.now() >= deadline) return;
          let stream: http2.ClientHttp2Stream;
          try {
            stream = conn.session.request(
              { ':method': 'POST', ':path': '/ProxyService/Proxy', 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'cluster-proxy-user-server' },
              { endStream: false },
            );
          } catch (err) {
            // The connection is closing (GOAWAY came in since it was picked).
            this.retire(conn);
            reject(new UnsentDial('proxy_protocol_error', `the connection to the ANP proxy-server at ${this.proxyName} is closing: ${(err as Error).message}`, { cause: err }));
            return;
          }
          conn.tunnels++;
          stream.once('close', () => conn.tunnels--);
          tunnel = new GrpcTunnel({ stream, proxyName: this.proxyName, stallTimeoutMs: this.opts.stallTimeoutMs, readBufferBytes: READ_BUFFER_BYTES });
          tunnel.dial(target, random).then(() => resolve(tunnel!), (err: DialError) => {
            if (err.outcome === 'agent_unavailable') {
              reject(new DialError('agent_unavailable', err.message, { retryAfterSeconds: this.opts.agentRetryAfterSeconds }));
            } else {
              reject(err);
            }
          });
        }, (err: DialError) => reject(new UnsentDial(err.outcome, err.message, { cause: err.cause })));
      });
    } finally {
      clearTimeout(timer);
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
      pendingRandoms.delete(random);
    }
  }
}
