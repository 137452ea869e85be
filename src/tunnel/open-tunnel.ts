import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { DialError, authorityOf, isDialError, type DialOutcome, type DialTarget, type Dialer } from './dialer.ts';

export interface TunnelTarget extends DialTarget {
  /**
   * Offer h2 as well as http/1.1 to the service-proxy. Never for a tunnel that may carry an upgrade:
   * WebSocket and SPDY upgrades need HTTP/1.1.
   */
  http2?: boolean;
  /** What the tunnel is for, as the cluster view counts tunnels: which pool, or an upgrade; unset counts as short. */
  kind?: TunnelKind;
}

export type TunnelKind = 'short' | 'stream' | 'upgrade';

export interface DialReport {
  outcome: DialOutcome;
  /** Seconds from the start until the agent's dial was answered (or the failure). */
  connectSeconds: number;
  /** Seconds the TLS handshake to the service-proxy took, on success. */
  tlsSeconds?: number;
}

export interface TunnelOptions {
  /** Opens the byte stream through ANP: HTTP CONNECT or gRPC, chosen by configuration. */
  dialer: Dialer;
  /** Trust for the service-proxy inside the tunnel. */
  serviceProxyTls: () => tls.SecureContext;
  /** TLS handshake with the service-proxy inside the tunnel. */
  tlsHandshakeTimeoutMs: number;
  onDial?: (report: DialReport, target: TunnelTarget) => void;
  /** Called for each tunnel that opened, and again when it closes: feeds the open-tunnels gauge and the cluster view. */
  onTunnelOpen?: (socket: tls.TLSSocket, target: TunnelTarget) => void;
  onTunnelClose?: (socket: tls.TLSSocket, target: TunnelTarget) => void;
}

/**
 * Opens one tunnel: the dialer's byte stream to the cluster's service-proxy, then TLS to the service-proxy
 * inside it. Resolves with the TLS socket; rejects with a DialError.
 */
export async function openTunnel(opts: TunnelOptions, target: TunnelTarget, signal?: AbortSignal): Promise<tls.TLSSocket> {
  const started = performance.now();
  let carrier: Duplex;
  try {
    carrier = await opts.dialer.dial(target, signal);
  } catch (err) {
    const failure = isDialError(err) ? err : new DialError('proxy_protocol_error', `opening a tunnel failed: ${(err as Error).message}`, { cause: err });
    opts.onDial?.({ outcome: failure.outcome, connectSeconds: (performance.now() - started) / 1000 }, target);
    throw failure;
  }
  const connectSeconds = (performance.now() - started) / 1000;
  try {
    const socket = await startServiceProxyTls(opts, target, carrier, signal);
    opts.onDial?.({ outcome: 'success', connectSeconds, tlsSeconds: (performance.now() - started) / 1000 - connectSeconds }, target);
    if (opts.onTunnelOpen !== undefined) {
      opts.onTunnelOpen(socket, target);
      socket.once('close', () => opts.onTunnelClose?.(socket, target));
    }
    return socket;
  } catch (err) {
    const failure = err as DialError;
    opts.onDial?.({ outcome: failure.outcome, connectSeconds }, target);
    throw failure;
  }
}

function startServiceProxyTls(opts: TunnelOptions, target: TunnelTarget, carrier: Duplex, signal: AbortSignal | undefined): Promise<tls.TLSSocket> {
  const authority = authorityOf(target);
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (outcome: Exclude<DialOutcome, 'success'>, message: string, cause?: unknown): void => {
      if (settled) return;
      settled = true;
      cleanup();
      // Both may still report the failure that brought us here; nobody is left to care.
      inner.on('error', () => {});
      carrier.on('error', () => {});
      const failure = new DialError(outcome, message, cause === undefined ? {} : { cause });
      const explain = outcome === 'aborted' || outcome === 'service_proxy_tls_timeout' ? undefined : opts.dialer.explainFailedHandshake;
      if (explain === undefined) {
        inner.destroy();
        carrier.destroy();
        reject(failure);
        return;
      }
      const explained = explain.call(opts.dialer, carrier);
      inner.destroy();
      carrier.destroy();
      explained.then((e) => reject(e ?? failure), () => reject(failure));
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      if (isPlainTextInsteadOfTls(err)) {
        fail('proxy_protocol_error', `the tunnel to ${authority} carried plain text instead of TLS, as ANP versions before v0.31.4 do to report a dial error after answering 200: ${err.message}`, err);
      } else {
        fail('service_proxy_tls_failed', `TLS to the service-proxy ${authority} failed: ${err.message}`, err);
      }
    };
    // The TLS socket may report why (a certificate it refused) only after the tunnel under it closed.
    const onCarrierClose = (): void => {
      setImmediate(() => fail('service_proxy_tls_failed', `the tunnel to ${authority} closed during the TLS handshake with the service-proxy`));
    };
    const onAbort = (): void => fail('aborted', 'the request was cancelled while the tunnel was being opened');
    const timer = setTimeout(() => {
      fail('service_proxy_tls_timeout', `TLS handshake with the service-proxy ${authority} did not finish within ${opts.tlsHandshakeTimeoutMs} ms`);
    }, opts.tlsHandshakeTimeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      inner.removeListener('error', onError);
      carrier.removeListener('error', onError);
      carrier.removeListener('close', onCarrierClose);
    };

    const inner = tls.connect({
      socket: carrier,
      host: target.host,
      servername: net.isIP(target.host) === 0 ? target.host : undefined,
      secureContext: opts.serviceProxyTls(),
      ALPNProtocols: target.http2 === true ? ['h2', 'http/1.1'] : ['http/1.1'],
    });
    inner.once('error', onError);
    carrier.once('error', onError);
    carrier.once('close', onCarrierClose);
    if (signal !== undefined) {
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
    }
    inner.once('secureConnect', () => {
      if (settled) return;
      settled = true;
      cleanup();
      // From here the TLS socket's owner handles errors; a failure of the carrier must reach it.
      carrier.on('error', (err) => inner.destroy(err));
      resolve(inner);
    });
  });
}

/** OpenSSL's complaint when the bytes it reads are not a TLS record, e.g. "HTTP/1.1 500". */
function isPlainTextInsteadOfTls(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || err.code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' || err.code === 'ERR_SSL_HTTP_REQUEST';
}
