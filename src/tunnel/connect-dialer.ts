import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import {
  answeredBeforeDial,
  classifyConnectFailure,
  looksLikeInBandHttp,
  parseReplyHead,
  parseStatusLine,
  type ReplyHead,
} from './connect-reply.ts';
import { DialError, authorityOf, isNoCommonProtocol, isTlsError, type DialOutcome, type DialTarget, type Dialer } from './dialer.ts';

/** Where an ANP proxy-server's frontend listens: TCP with mutual TLS, or a Unix socket (plain). */
export type ProxyEndpoint =
  | { transport: 'tcp'; host: string; port: number; servername: string }
  | { transport: 'uds'; path: string };

export function endpointName(endpoint: ProxyEndpoint): string {
  return endpoint.transport === 'tcp' ? `${endpoint.host}:${endpoint.port}` : endpoint.path;
}

export interface ConnectDialerOptions {
  endpoint: ProxyEndpoint;
  /** mTLS context for the proxy-server (TCP only); read per dial so that rotated files apply to new tunnels. */
  proxyTls: () => tls.SecureContext | undefined;
  /** Covers reaching the proxy-server, its TLS handshake and the CONNECT reply (which waits for the agent's dial). */
  connectTimeoutMs: number;
  /** Retry-After sent with 503 when the cluster's agent is not connected. */
  agentRetryAfterSeconds: number;
}

/** Longest error body kept from a failed CONNECT reply; ANP's are one line. */
const MAX_ERROR_BODY = 4096;
/** How long an era-A tunnel that failed TLS may take to deliver the rest of ANP's in-band error. */
const IN_BAND_WAIT_MS = 1_000;

/**
 * ANP's HTTP-CONNECT frontend (`--mode=http-connect`): one connection to the proxy-server per tunnel,
 * `CONNECT host:port`, and once a 2xx arrives the connection itself is the tunnel. Nothing is written into
 * it before the 2xx. Replies of all three ANP eras are understood (connect-reply.ts).
 */
export class ConnectDialer implements Dialer {
  private readonly opts: ConnectDialerOptions;

  constructor(opts: ConnectDialerOptions) {
    this.opts = opts;
  }

  close(): void {
    // Nothing is kept between dials: every tunnel is its own connection.
  }

  async explainFailedHandshake(carrier: Duplex): Promise<DialError | undefined> {
    if (!(carrier instanceof InBandTap)) return undefined;
    // The error's status line may come before its text: wait for ANP to close the tunnel, briefly.
    carrier.explaining = true;
    try {
      await carrier.untilProxyCloses(IN_BAND_WAIT_MS);
    } finally {
      carrier.releaseRaw();
    }
    const text = carrier.firstBytes.toString('utf8');
    const target = carrier.target;
    if (looksLikeInBandHttp(carrier.firstBytes)) {
      const lineEnd = text.indexOf('\r\n');
      const status = parseStatusLine(lineEnd === -1 ? text : text.slice(0, lineEnd));
      const bodyStart = text.indexOf('\r\n\r\n');
      return dialErrorFromReply(target, status?.statusCode ?? 502, status?.statusText ?? '', bodyStart === -1 ? '' : text.slice(bodyStart + 4), 'in-band after 200', this.opts.agentRetryAfterSeconds);
    }
    if (carrier.firstBytes.length === 0 && carrier.closedByProxy) {
      // Before v0.31, "no agent" is a 200 and then a close, with nothing in between.
      return new DialError('agent_unavailable', `no agent is connected for ${target.host} (the ANP proxy-server answered CONNECT ${authorityOf(target)} with 200 and closed the tunnel, as versions before v0.31 do when no agent matches)`, { retryAfterSeconds: this.opts.agentRetryAfterSeconds });
    }
    return undefined;
  }

  dial(target: DialTarget, signal?: AbortSignal): Promise<Duplex> {
    const opts = this.opts;
    return new Promise((resolve, reject) => {
      let settled = false;
      const authority = authorityOf(target);
      const proxyName = endpointName(opts.endpoint);
      let phase: 'connect' | 'reply' = 'connect';

      const finish = (err: DialError | undefined, carrier?: Duplex): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        raw.removeListener('error', onRawError);
        raw.removeListener('close', onRawClose);
        if (err !== undefined) {
          raw.destroy();
          reject(err);
        } else {
          resolve(carrier ?? raw);
        }
      };
      const fail = (outcome: Exclude<DialOutcome, 'success'>, message: string, cause?: unknown, retryAfterSeconds?: number): void => {
        const options: { cause?: unknown; retryAfterSeconds?: number } = {};
        if (cause !== undefined) options.cause = cause;
        if (retryAfterSeconds !== undefined) options.retryAfterSeconds = retryAfterSeconds;
        finish(new DialError(outcome, message, options));
      };

      const onAbort = (): void => fail('aborted', 'the request was cancelled while the tunnel was being opened');
      const onRawError = (err: NodeJS.ErrnoException): void => {
        if (isTlsError(err)) {
          const hint = isNoCommonProtocol(err) ? ' (the proxy-server offers no HTTP/1.1: is it in gRPC mode? then use --proxy-mode=grpc)' : '';
          fail('proxy_tls_failed', `TLS to the ANP proxy-server at ${proxyName} failed: ${err.message}${hint}`, err);
        } else if (phase === 'connect') {
          fail('proxy_unreachable', `cannot reach the ANP proxy-server at ${proxyName}: ${err.message}`, err);
        } else {
          fail('proxy_protocol_error', `the connection to the ANP proxy-server at ${proxyName} failed while waiting for the CONNECT reply: ${err.message}`, err);
        }
      };
      const onRawClose = (): void => {
        const hint = phase === 'reply' ? ' (a proxy-server in gRPC mode drops a CONNECT like this: if it runs without --mode=http-connect, use --proxy-mode=grpc)' : '';
        fail('proxy_protocol_error', `the ANP proxy-server at ${proxyName} closed the connection before answering CONNECT ${authority}${hint}`);
      };

      const endpoint = opts.endpoint;
      const raw: net.Socket =
        endpoint.transport === 'tcp'
          ? tls.connect({
              host: endpoint.host,
              port: endpoint.port,
              // RFC 6066 forbids IP addresses as SNI; Node still verifies the certificate against `host`.
              servername: net.isIP(endpoint.servername) === 0 ? endpoint.servername : undefined,
              secureContext: opts.proxyTls(),
              // ANP's frontend disables HTTP/2; a client offering only h2 fails the handshake (anp.md matrix 5).
              ALPNProtocols: ['http/1.1'],
              noDelay: true,
              keepAlive: true,
              keepAliveInitialDelay: 30_000,
            } as tls.ConnectionOptions)
          : net.connect({ path: endpoint.path, noDelay: true });

      raw.on('error', onRawError);
      raw.on('close', onRawClose);
      const timer = setTimeout(() => {
        if (phase === 'reply') {
          // ANP answers CONNECT only once the agent has dialled (era C), so silence here is the agent's.
          fail('agent_dial_timeout', `no answer to CONNECT ${authority} from the ANP proxy-server at ${proxyName} within ${opts.connectTimeoutMs} ms`);
        } else {
          fail('proxy_timeout', `could not connect to the ANP proxy-server at ${proxyName} within ${opts.connectTimeoutMs} ms`);
        }
      }, opts.connectTimeoutMs);
      if (signal !== undefined) {
        if (signal.aborted) {
          onAbort();
          return;
        }
        signal.addEventListener('abort', onAbort, { once: true });
      }

      const failFromReply = (statusCode: number, statusText: string, body: string, inBand: boolean): void => {
        finish(dialErrorFromReply(target, statusCode, statusText, body, inBand ? 'in-band after 200' : 'to CONNECT', opts.agentRetryAfterSeconds));
      };

      raw.once(endpoint.transport === 'tcp' ? 'secureConnect' : 'connect', () => {
        phase = 'reply';
        raw.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
        readReplyHead(raw, (err, head) => {
          if (settled) return;
          if (err !== undefined) {
            fail('proxy_protocol_error', `unexpected answer to CONNECT ${authority} from the ANP proxy-server: ${err.message}`, err);
            return;
          }
          if (head!.statusCode < 200 || head!.statusCode > 299) {
            readErrorBody(raw, head!.rest, (body) => failFromReply(head!.statusCode, head!.statusText, body, false));
            return;
          }
          if (looksLikeInBandHttp(head!.rest)) {
            readErrorBody(raw, head!.rest, (text) => {
              const lineEnd = text.indexOf('\r\n');
              const status = parseStatusLine(lineEnd === -1 ? text : text.slice(0, lineEnd));
              const bodyStart = text.indexOf('\r\n\r\n');
              const body = bodyStart === -1 ? '' : text.slice(bodyStart + 4);
              failFromReply(status?.statusCode ?? 502, status?.statusText ?? '', body, true);
            });
            return;
          }
          if (head!.rest.length > 0) {
            // A TLS server speaks only after our ClientHello, so bytes here are not from the service-proxy.
            fail('proxy_protocol_error', `the ANP proxy-server sent ${head!.rest.length} unexpected bytes after accepting CONNECT ${authority}`);
            return;
          }
          // An era-A 200 comes before the dial: keep the tunnel's first bytes, which may be ANP's
          // in-band report of a failed dial rather than the service-proxy's TLS.
          finish(undefined, answeredBeforeDial(head!) ? new InBandTap(raw, target) : raw);
        });
      });
    });
  }
}

function dialErrorFromReply(target: DialTarget, statusCode: number, statusText: string, body: string, how: string, agentRetryAfterSeconds: number): DialError {
  const authority = authorityOf(target);
  const said = `${statusCode}${statusText ? ` ${statusText}` : ''}${body.trim() ? `: ${body.trim()}` : ''}`;
  switch (classifyConnectFailure(statusCode, body)) {
    case 'no-agent':
      return new DialError('agent_unavailable', `no agent is connected for ${target.host} (the ANP proxy-server answered ${how}: ${said})`, { retryAfterSeconds: agentRetryAfterSeconds });
    case 'dial-timeout':
      return new DialError('agent_dial_timeout', `the agent timed out dialling ${authority} (the ANP proxy-server answered ${how}: ${said})`);
    case 'dial-failed':
      return new DialError('agent_dial_failed', `the agent could not dial ${authority} (the ANP proxy-server answered ${how}: ${said})`);
    default:
      return new DialError('proxy_protocol_error', `the ANP proxy-server refused CONNECT ${authority}: ${said}`);
  }
}

/**
 * The tunnel of an era-A proxy-server, which answers 200 before its agent dials: the same bytes both ways,
 * with the first ones received kept, so that a failed TLS handshake can be explained by ANP's in-band
 * error text. Only era A pays for this JavaScript hop; eras B and C answer after the dial.
 */
class InBandTap extends Duplex {
  readonly target: DialTarget;
  firstBytes: Buffer = Buffer.alloc(0);
  /** The proxy-server ended the tunnel (rather than this side). */
  closedByProxy = false;
  private readonly raw: net.Socket;

  /** Resolves once the proxy-server has closed the tunnel, or after `ms`. */
  untilProxyCloses(ms: number): Promise<void> {
    if (this.closedByProxy) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.raw.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  constructor(raw: net.Socket, target: DialTarget) {
    super({ allowHalfOpen: false });
    this.raw = raw;
    this.target = target;
    raw.on('data', (chunk: Buffer) => {
      if (this.firstBytes.length < MAX_ERROR_BODY) this.firstBytes = Buffer.concat([this.firstBytes, chunk]).subarray(0, MAX_ERROR_BODY);
      if (!this.push(chunk)) raw.pause();
    });
    raw.on('end', () => {
      this.closedByProxy = true;
      this.push(null);
    });
    raw.on('error', (err) => this.destroy(err));
    raw.on('close', () => {
      this.closedByProxy = true;
      this.destroy();
    });
  }

  override _read(): void {
    this.raw.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.raw.write(chunk, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    // As on the plain socket: the end of our side ends the tunnel at ANP.
    this.raw.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // Kept open until the failure is explained (closed() waits for ANP's close); then the owner destroys it.
    if (!this.raw.destroyed && !this.explaining) this.raw.destroy();
    callback(err);
  }

  releaseRaw(): void {
    this.explaining = false;
    this.raw.destroy();
  }

  /** Set while a failed handshake is being explained: the raw socket must stay to receive ANP's text. */
  explaining = false;
}

/** Reads from `socket` until a complete reply head is parsed; pauses the socket again afterwards. */
function readReplyHead(socket: net.Socket, cb: (err: Error | undefined, head?: ReplyHead) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let head: ReplyHead | undefined;
    try {
      head = parseReplyHead(buf);
    } catch (err) {
      socket.removeListener('data', onData);
      cb(err as Error);
      return;
    }
    if (head === undefined) return;
    socket.removeListener('data', onData);
    socket.pause();
    cb(undefined, head);
  };
  socket.on('data', onData);
}

/** Collects an error body until EOF (era C closes after it) or MAX_ERROR_BODY bytes. */
function readErrorBody(socket: net.Socket, first: Buffer, cb: (body: string) => void): void {
  const chunks: Buffer[] = [first];
  let size = first.length;
  let done = false;
  const end = (): void => {
    if (done) return;
    done = true;
    socket.removeListener('data', onData);
    cb(Buffer.concat(chunks).toString('utf8', 0, Math.min(size, MAX_ERROR_BODY)));
  };
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= MAX_ERROR_BODY) end();
  };
  if (size >= MAX_ERROR_BODY) {
    end();
    return;
  }
  socket.on('data', onData);
  socket.once('end', end);
  socket.once('close', end);
  socket.resume();
}
