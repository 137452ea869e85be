import http, { type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { ProxyError, isProxyError, withCluster } from '../errors/proxy-error.ts';
import type { ClusterView } from '../observability/cluster-state.ts';
import type { Metrics } from '../observability/metrics.ts';
import { buildUpstreamHeaders } from '../routing/forward-headers.ts';
import type { Admitter } from '../server/admission.ts';
import { openTunnel, type TunnelOptions, type TunnelTarget } from '../tunnel/open-tunnel.ts';
import { refusalHead, statusResponse, switchedToRequested, switchingProtocolsHead } from './response-head.ts';
import { splice, type Splice, type SpliceResult } from './splice.ts';

export interface UpgradeHandlerDeps {
  tunnel: TunnelOptions;
  targetFor: (cluster: string) => TunnelTarget;
  metrics: Metrics;
  /** Per-cluster state for the health port's view; undefined with --cluster-view=false. */
  clusters?: ClusterView | undefined;
  logger: Logger;
  accessLog: boolean;
  /** Route, identity headers, allowlist and per-cluster limit (shared with the plain path). */
  admission: Admitter;
  /** Wait for the upstream's answer to the upgrade request; 0 disables. */
  responseHeadersTimeoutMs: number;
  clientStallTimeoutMs: number;
  idleTimeoutMs: number;
}

interface Session {
  /** Set once the upstream switched protocols. */
  splice?: Splice;
  /** Stops the setup before the 101. */
  abort: AbortController;
  finished: Promise<void>;
}

export interface UpgradeHandler {
  handle(req: IncomingMessage, socket: Duplex, head: Buffer, requestId: string): void;
  /** Sessions open or being set up. */
  readonly open: number;
  /** Ends every session cleanly and resolves once all are closed (drain). */
  closeAll(): Promise<void>;
}

/** How long a side that was ended may take to flush before it is destroyed. */
const LINGER_MS = 5_000;

const SHUTDOWN = 'shutdown';
const CLIENT_GONE = 'client gone';

/**
 * HTTP/1.1 upgrades (exec, attach, port-forward over WebSocket or SPDY/3.1). The request is routed
 * like any other, then sent on a tunnel of its own: a pooled keep-alive tunnel cannot be handed over
 * to a byte stream. After the upstream's 101 both sockets are spliced byte for byte; any other answer
 * is relayed as a normal response and the connection closed.
 */
export function createUpgradeHandler(deps: UpgradeHandlerDeps): UpgradeHandler {
  const sessions = new Set<Session>();

  const handle = (req: IncomingMessage, socket: Duplex, head: Buffer, requestId: string): void => {
    const started = performance.now();
    const method = req.method ?? 'GET';
    // Until the 101, a client error or hang-up only needs the setup to stop.
    socket.on('error', () => socket.destroy());

    const admissionRequest = { method, url: req.url ?? '', rawHeaders: req.rawHeaders, requestId, upgrade: true };
    const admitted = deps.admission.admit(admissionRequest);
    if (!admitted.admitted) {
      socket.end(statusResponse(admitted.error, admitted.cluster, requestId));
      return;
    }
    const route = admitted.route;
    const cluster = route.cluster;
    deps.metrics.requestStarted('upgrade');
    const view = deps.clusters?.requestStarted(cluster);

    const abort = new AbortController();
    let resolveFinished!: () => void;
    const session: Session = {
      abort,
      finished: new Promise<void>((resolve) => {
        resolveFinished = resolve;
      }),
    };
    sessions.add(session);
    let status = 0;
    let errorCode: string | undefined;
    let errorMessage: string | undefined;
    /** The Status the proxy answered with instead of the upstream's 101. */
    let failure: ProxyError | undefined;
    let finished = false;
    const finish = (result: Pick<SpliceResult, 'bytesUp' | 'bytesDown'> & { end?: string }): void => {
      if (finished) return;
      finished = true;
      sessions.delete(session);
      admitted.release();
      const seconds = (performance.now() - started) / 1000;
      deps.metrics.requestFinished('upgrade', method, status, seconds);
      if (failure !== undefined) deps.metrics.proxyError(failure);
      view?.requestFinished(failure);
      logLine({ status, error: errorCode, bytesUp: result.bytesUp, bytesDown: result.bytesDown, end: result.end, seconds, message: errorMessage });
      resolveFinished();
    };

    function logLine(fields: { status: number; error?: string | undefined; bytesUp: number; bytesDown: number; end?: string | undefined; seconds?: number; message?: string | undefined }): void {
      const failed = fields.error !== undefined && fields.status >= 500;
      if (!deps.accessLog && !failed) return;
      const line = deps.admission.accessLine(admissionRequest, route, 'upgrade', fields.status, fields.seconds ?? (performance.now() - started) / 1000);
      line.protocol = req.headers.upgrade;
      line.bytesUp = fields.bytesUp;
      line.bytesDown = fields.bytesDown;
      if (fields.error !== undefined) line.error = fields.error;
      if (fields.end !== undefined) line.end = fields.end;
      if (failed) deps.logger.warn({ ...line, detail: fields.message }, 'upgrade failed');
      else deps.logger.info(line, 'upgrade');
    }

    const failBefore = (err: ProxyError): void => {
      status = err.statusCode;
      errorCode = err.code;
      errorMessage = err.message;
      if (!socket.destroyed && socket.writable) {
        failure = err;
        socket.end(statusResponse(withCluster(err, cluster), cluster, requestId));
      }
      finish({ bytesUp: 0, bytesDown: 0 });
    };

    /** Setup stopped by the client hanging up, or by a drain that answers 503 to whoever still waits. */
    const stopSetup = (): void => {
      if (abort.signal.reason === SHUTDOWN && !socket.destroyed) {
        failBefore(new ProxyError('SHUTTING_DOWN', 'the user-server is shutting down; retry on another replica', { retryAfterSeconds: 1 }));
      } else {
        finish({ bytesUp: 0, bytesDown: 0, end: 'client_closed' });
      }
    };
    const clientGone = (): void => abort.abort(CLIENT_GONE);
    socket.once('close', clientGone);

    openTunnel(deps.tunnel, { ...deps.targetFor(cluster), kind: 'upgrade' }, abort.signal).then(
      (tunnel) => {
        if (abort.signal.aborted) {
          tunnel.destroy();
          stopSetup();
          return;
        }
        sendUpgradeRequest(tunnel);
      },
      (err: unknown) => {
        if (abort.signal.aborted || socket.destroyed) {
          stopSetup();
          return;
        }
        failBefore(isProxyError(err) ? err : new ProxyError('UPSTREAM_FAILED', String(err)));
      },
    );

    const protocolMismatch = (switchedTo: string | undefined): ProxyError =>
      new ProxyError('UPGRADE_PROTOCOL_MISMATCH', `the managed cluster switched protocols to ${JSON.stringify(switchedTo ?? '')} when ${JSON.stringify(req.headers.upgrade ?? '')} was requested`);

    const sendUpgradeRequest = (tunnel: TLSSocket): void => {
      const headers = buildUpstreamHeaders({
        rawHeaders: req.rawHeaders,
        clientAddress: req.socket.remoteAddress,
        target: route.target,
        upgrade: req.headers.upgrade ?? '',
        stripImpersonation: admitted.stripImpersonation,
      });
      const upReq = http.request({
        method,
        path: route.upstreamPath,
        headers,
        setHost: false,
        // With no agent, Node takes the socket from createConnection: the tunnel, used once.
        createConnection: () => tunnel,
      });
      let timer: NodeJS.Timeout | undefined;
      if (deps.responseHeadersTimeoutMs > 0) {
        timer = setTimeout(() => {
          upReq.destroy();
          failBefore(new ProxyError('UPSTREAM_HEADERS_TIMEOUT', `the managed cluster did not answer the upgrade request within ${deps.responseHeadersTimeoutMs} ms`));
        }, deps.responseHeadersTimeoutMs);
      }
      const onAbort = (): void => {
        clearTimeout(timer);
        upReq.destroy();
        tunnel.destroy();
        stopSetup();
      };
      abort.signal.addEventListener('abort', onAbort, { once: true });
      const settled = (): boolean => {
        clearTimeout(timer);
        abort.signal.removeEventListener('abort', onAbort);
        return socket.destroyed;
      };

      upReq.on('error', (err: Error) => {
        if (settled()) return;
        failBefore(new ProxyError('UPSTREAM_FAILED', `the tunnel failed before the managed cluster answered the upgrade: ${err.message}`, { cause: err }));
      });

      upReq.on('response', (res: IncomingMessage) => {
        if (settled()) {
          res.destroy();
          return;
        }
        if (res.statusCode === 101) {
          // A 101 that names no protocol (Node passes it here, not to 'upgrade'): nothing to splice.
          res.destroy();
          tunnel.destroy();
          failBefore(protocolMismatch(undefined));
          return;
        }
        // Relayed as a normal response: kubectl shows this body when the upgrade is refused.
        status = res.statusCode ?? 0;
        socket.removeListener('close', clientGone);
        let bytesDown = 0;
        socket.write(refusalHead(status, res.statusMessage, res.rawHeaders, requestId));
        res.on('data', (chunk: Buffer) => {
          bytesDown += chunk.length;
          if (!socket.write(chunk)) {
            res.pause();
            socket.once('drain', () => res.resume());
          }
        });
        const done = (): void => {
          tunnel.destroy();
          finish({ bytesUp: 0, bytesDown, end: 'refused' });
        };
        res.once('end', () => {
          socket.end();
          // The client hangs up on Connection: close; one that does not is not waited for.
          setTimeout(() => socket.destroy(), LINGER_MS).unref();
          done();
        });
        res.once('error', () => {
          socket.destroy();
          done();
        });
        socket.once('close', () => res.destroy());
      });

      upReq.on('upgrade', (res: IncomingMessage, upstream: Duplex, upstreamHead: Buffer) => {
        if (settled()) {
          upstream.destroy();
          return;
        }
        if (!switchedToRequested(req.headers.upgrade ?? '', res.headers.upgrade)) {
          // Go's ReverseProxy answers 502 too: the client would speak one protocol and the cluster another.
          upstream.destroy();
          tunnel.destroy();
          failBefore(protocolMismatch(res.headers.upgrade));
          return;
        }
        status = 101;
        socket.removeListener('close', clientGone);
        deps.metrics.upgradeOpened();
        socket.write(switchingProtocolsHead(res.rawHeaders, res.statusMessage, res.headers.upgrade!, requestId));
        if (upstreamHead.length > 0) socket.write(upstreamHead);
        // Bytes the client sent before the 101 (it should not, but may) follow the upgrade request.
        if (head.length > 0) upstream.write(head);
        const s = splice(socket, upstream, {
          clientStallTimeoutMs: deps.clientStallTimeoutMs,
          idleTimeoutMs: deps.idleTimeoutMs,
          lingerMs: LINGER_MS,
        });
        session.splice = s;
        void s.done.then((result) => {
          deps.metrics.upgradeClosed();
          if (result.error !== undefined) errorMessage = result.error.message;
          finish({ bytesUp: result.bytesUp + head.length, bytesDown: result.bytesDown + upstreamHead.length, end: result.end });
        });
      });

      upReq.end();
    };
  };

  return {
    handle,
    get open() {
      return sessions.size;
    },
    async closeAll() {
      const pending = [...sessions];
      for (const s of pending) {
        if (s.splice !== undefined) s.splice.close();
        else s.abort.abort(SHUTDOWN);
      }
      await Promise.all(pending.map((s) => s.finished));
    },
  };
}
