import net from 'node:net';
import tls from 'node:tls';
import { ProxyError, type ProxyErrorCode } from '../errors/proxy-error.ts';
import {
  classifyConnectFailure,
  looksLikeInBandHttp,
  parseReplyHead,
  parseStatusLine,
  type ReplyHead,
} from './connect-reply.ts';

/** How to reach the ANP proxy-server's HTTP-CONNECT frontend. */
export type ProxyServerAddress =
  | { transport: 'tcp'; host: string; port: number; servername: string }
  | { transport: 'uds'; path: string };

export interface TunnelTarget {
  /** Host the agent dials and the service-proxy certificate must name; also the TLS SNI. */
  host: string;
  port: number;
  /**
   * Offer h2 as well as http/1.1 to the service-proxy. Never for a tunnel that may carry an upgrade:
   * WebSocket and SPDY upgrades need HTTP/1.1.
   */
  http2?: boolean;
}

export type DialOutcome =
  | 'success'
  | 'agent_unavailable'
  | 'agent_dial_failed'
  | 'agent_dial_timeout'
  | 'proxy_unreachable'
  | 'proxy_tls_failed'
  | 'proxy_timeout'
  | 'proxy_protocol_error'
  | 'service_proxy_tls_failed'
  | 'service_proxy_tls_timeout'
  | 'aborted';

export interface DialReport {
  outcome: DialOutcome;
  /** Seconds from the start until the CONNECT reply (or the failure). */
  connectSeconds: number;
  /** Seconds the TLS handshake to the service-proxy took, on success. */
  tlsSeconds?: number;
}

export interface TunnelOptions {
  proxy: ProxyServerAddress;
  /** mTLS context for the proxy-server (TCP only); read per dial so that rotated files apply to new tunnels. */
  proxyTls: () => tls.SecureContext | undefined;
  /** Trust for the service-proxy inside the tunnel. */
  serviceProxyTls: () => tls.SecureContext;
  /** Covers reaching the proxy-server, its TLS handshake and the CONNECT reply (which waits for the agent's dial). */
  connectTimeoutMs: number;
  /** TLS handshake with the service-proxy inside the tunnel. */
  tlsHandshakeTimeoutMs: number;
  /** Retry-After sent with 503 when the cluster's agent is not connected. */
  agentRetryAfterSeconds: number;
  onDial?: (report: DialReport) => void;
  /** Called for each tunnel that opened, and again when it closes: feeds the open-tunnels gauge. */
  onTunnelOpen?: () => void;
  onTunnelClose?: () => void;
}

/** Longest error body kept from a failed CONNECT reply; ANP's are one line. */
const MAX_ERROR_BODY = 4096;

/**
 * Opens one tunnel: a connection to the proxy-server (mTLS over TCP, or a Unix socket), `CONNECT host:port`,
 * and once a 2xx arrives, TLS to the service-proxy inside it. Nothing is written into the tunnel before
 * the 2xx, and the tunnel is never half-closed (ANP tears the whole tunnel down on client EOF).
 * Resolves with the TLS socket to the service-proxy; rejects with a ProxyError.
 */
export function openTunnel(opts: TunnelOptions, target: TunnelTarget, signal?: AbortSignal): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let connectSeconds = 0;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let inner: tls.TLSSocket | undefined;
    const authority = target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;

    const finish = (err: ProxyError | undefined, outcome: DialOutcome, socket?: tls.TLSSocket): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      raw.removeListener('error', onRawError);
      raw.removeListener('close', onRawClose);
      const now = performance.now();
      if (connectSeconds === 0) connectSeconds = (now - started) / 1000;
      const report: DialReport = { outcome, connectSeconds };
      if (outcome === 'success') report.tlsSeconds = (now - started) / 1000 - connectSeconds;
      opts.onDial?.(report);
      if (err !== undefined) {
        inner?.destroy();
        raw.destroy();
        reject(err);
      } else {
        resolve(socket!);
      }
    };

    const fail = (code: ProxyErrorCode, outcome: DialOutcome, message: string, cause?: unknown, retryAfterSeconds?: number): void => {
      const options: { cause?: unknown; retryAfterSeconds?: number } = {};
      if (cause !== undefined) options.cause = cause;
      if (retryAfterSeconds !== undefined) options.retryAfterSeconds = retryAfterSeconds;
      finish(new ProxyError(code, message, options), outcome);
    };

    const proxyName = opts.proxy.transport === 'tcp' ? `${opts.proxy.host}:${opts.proxy.port}` : opts.proxy.path;
    let phase: 'connect' | 'reply' | 'tls' = 'connect';

    const onAbort = (): void => fail('UPSTREAM_FAILED', 'aborted', 'the request was cancelled while the tunnel was being opened');
    const onRawError = (err: NodeJS.ErrnoException): void => {
      if (phase === 'connect' && !isTlsError(err)) {
        fail('PROXY_UNREACHABLE', 'proxy_unreachable', `cannot reach the ANP proxy-server at ${proxyName}: ${err.message}`, err);
      } else if (phase !== 'tls' && isTlsError(err)) {
        fail('PROXY_TLS_FAILED', 'proxy_tls_failed', `TLS to the ANP proxy-server at ${proxyName} failed: ${err.message}`, err);
      } else if (phase === 'tls') {
        onInnerError(err);
      } else {
        fail('PROXY_PROTOCOL_ERROR', 'proxy_protocol_error', `the connection to the ANP proxy-server at ${proxyName} failed while waiting for the CONNECT reply: ${err.message}`, err);
      }
    };
    const onRawClose = (): void => {
      if (phase === 'tls') {
        fail('SERVICE_PROXY_TLS_FAILED', 'service_proxy_tls_failed', `the tunnel to ${authority} closed during the TLS handshake with the service-proxy`);
      } else {
        fail('PROXY_PROTOCOL_ERROR', 'proxy_protocol_error', `the ANP proxy-server at ${proxyName} closed the connection before answering CONNECT ${authority}`);
      }
    };
    const onInnerError = (err: NodeJS.ErrnoException): void => {
      if (isPlainTextInsteadOfTls(err)) {
        fail('PROXY_PROTOCOL_ERROR', 'proxy_protocol_error', `the ANP proxy-server answered CONNECT ${authority} with 200 and then wrote plain text into the tunnel, as older ANP versions do to report a dial error: ${err.message}`, err);
      } else {
        fail('SERVICE_PROXY_TLS_FAILED', 'service_proxy_tls_failed', `TLS to the service-proxy ${authority} failed: ${err.message}`, err);
      }
    };

    const raw: net.Socket =
      opts.proxy.transport === 'tcp'
        ? tls.connect({
            host: opts.proxy.host,
            port: opts.proxy.port,
            // RFC 6066 forbids IP addresses as SNI; Node still verifies the certificate against `host`.
            servername: net.isIP(opts.proxy.servername) === 0 ? opts.proxy.servername : undefined,
            secureContext: opts.proxyTls(),
            // ANP's frontend disables HTTP/2; a client offering only h2 fails the handshake (anp.md matrix 5).
            ALPNProtocols: ['http/1.1'],
            noDelay: true,
            keepAlive: true,
            keepAliveInitialDelay: 30_000,
          } as tls.ConnectionOptions)
        : net.connect({ path: opts.proxy.path, noDelay: true });

    raw.on('error', onRawError);
    raw.on('close', onRawClose);
    if (signal !== undefined) {
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
    }
    timer = setTimeout(() => {
      if (phase === 'reply') {
        fail('AGENT_DIAL_TIMEOUT', 'proxy_timeout', `no answer to CONNECT ${authority} from the ANP proxy-server at ${proxyName} within ${opts.connectTimeoutMs} ms`);
      } else {
        fail('PROXY_CONNECT_TIMEOUT', 'proxy_timeout', `could not connect to the ANP proxy-server at ${proxyName} within ${opts.connectTimeoutMs} ms`);
      }
    }, opts.connectTimeoutMs);

    raw.once(opts.proxy.transport === 'tcp' ? 'secureConnect' : 'connect', () => {
      phase = 'reply';
      raw.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      readReplyHead(raw, (err, head) => {
        if (settled) return;
        if (err !== undefined) {
          fail('PROXY_PROTOCOL_ERROR', 'proxy_protocol_error', `unexpected answer to CONNECT ${authority} from the ANP proxy-server: ${err.message}`, err);
          return;
        }
        connectSeconds = (performance.now() - started) / 1000;
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
        startServiceProxyTls(head!.rest);
      });
    });

    const failFromReply = (statusCode: number, statusText: string, body: string, inBand: boolean): void => {
      const said = `${statusCode}${statusText ? ` ${statusText}` : ''}${body.trim() ? `: ${body.trim()}` : ''}`;
      const how = inBand ? 'in-band after 200' : 'to CONNECT';
      switch (classifyConnectFailure(statusCode, body)) {
        case 'no-agent':
          fail('AGENT_UNAVAILABLE', 'agent_unavailable', `no agent is connected for ${target.host} (the ANP proxy-server answered ${how}: ${said})`, undefined, opts.agentRetryAfterSeconds);
          return;
        case 'dial-timeout':
          fail('AGENT_DIAL_TIMEOUT', 'agent_dial_timeout', `the agent timed out dialling ${authority} (the ANP proxy-server answered ${how}: ${said})`);
          return;
        case 'dial-failed':
          fail('AGENT_DIAL_FAILED', 'agent_dial_failed', `the agent could not dial ${authority} (the ANP proxy-server answered ${how}: ${said})`);
          return;
        default:
          fail('PROXY_PROTOCOL_ERROR', 'proxy_protocol_error', `the ANP proxy-server refused CONNECT ${authority}: ${said}`);
      }
    };

    const startServiceProxyTls = (early: Buffer): void => {
      if (early.length > 0) {
        // A TLS server speaks only after our ClientHello, so bytes here are not from the service-proxy.
        fail('PROXY_PROTOCOL_ERROR', 'proxy_protocol_error', `the ANP proxy-server sent ${early.length} unexpected bytes after accepting CONNECT ${authority}`);
        return;
      }
      phase = 'tls';
      clearTimeout(timer);
      timer = setTimeout(() => {
        fail('SERVICE_PROXY_TLS_TIMEOUT', 'service_proxy_tls_timeout', `TLS handshake with the service-proxy ${authority} did not finish within ${opts.tlsHandshakeTimeoutMs} ms`);
      }, opts.tlsHandshakeTimeoutMs);
      inner = tls.connect({
        socket: raw,
        host: target.host,
        servername: net.isIP(target.host) === 0 ? target.host : undefined,
        secureContext: opts.serviceProxyTls(),
        ALPNProtocols: target.http2 === true ? ['h2', 'http/1.1'] : ['http/1.1'],
      });
      inner.once('error', onInnerError);
      inner.once('secureConnect', () => {
        const established = inner!;
        established.removeListener('error', onInnerError);
        finish(undefined, 'success', established);
        if (opts.onTunnelOpen !== undefined) {
          opts.onTunnelOpen();
          established.once('close', () => opts.onTunnelClose?.());
        }
        // From here the TLS socket's owner handles errors; a failure of the carrier must reach it.
        raw.on('error', (err) => established.destroy(err));
      });
    };
  });
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

function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code === 'CERT_HAS_EXPIRED' ||
    code.startsWith('UNABLE_TO_') || code.includes('CERT') || (err as { library?: string }).library === 'SSL routines';
}

/** OpenSSL's complaint when the bytes it reads are not a TLS record, e.g. "HTTP/1.1 500". */
function isPlainTextInsteadOfTls(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || err.code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' || err.code === 'ERR_SSL_HTTP_REQUEST';
}
