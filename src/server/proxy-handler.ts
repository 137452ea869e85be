import type { Logger } from 'pino';
import { renderStatusResponse } from '../errors/kube-status.ts';
import { type ProxyError, withCluster } from '../errors/proxy-error.ts';
import type { Metrics, RequestKind } from '../observability/metrics.ts';
import { buildUpstreamHeaders } from '../routing/forward-headers.ts';
import { isLongRunning } from '../routing/long-running.ts';
import type { TunnelTarget } from '../tunnel/open-tunnel.ts';
import { forward, type ClientRequest, type ClientResponse } from '../upstream/forward.ts';
import type { TunnelPools } from '../upstream/tunnel-pool.ts';
import type { Admitter } from './admission.ts';
import type { DrainState } from './drain.ts';

export interface ProxyHandlerDeps {
  pools: TunnelPools;
  targetFor: (cluster: string) => TunnelTarget;
  metrics: Metrics;
  logger: Logger;
  accessLog: boolean;
  /** Route, identity headers, allowlist and per-cluster limit (shared with the upgrade path). */
  admission: Admitter;
  clientStallTimeoutMs: number;
  drain: DrainState;
}

export const REQUEST_ID_HEADER = 'x-request-id';

/**
 * Serves one non-upgrade request: route on the raw target, forward through the cluster's tunnel pool,
 * answer proxy-made failures with a Kubernetes Status. Works on Node's request and response objects
 * (HTTP/1.1 or HTTP/2 compatibility API) so it does not depend on the web framework.
 */
export function createProxyHandler(deps: ProxyHandlerDeps): (req: ClientRequest, res: ClientResponse, requestId: string) => Promise<void> {
  // The access line is built from fixed scalar fields (no headers, no query, no error objects), so the
  // redaction paths can never match it; running them cost ~17 us per request (bench/README.md).
  const accessLogger = deps.logger.child({}, { redact: [] });
  const origins = new Map<TunnelTarget, string>();
  const originOf = (t: TunnelTarget): string => {
    let o = origins.get(t);
    if (o === undefined) {
      o = `https://${t.host}:${t.port}`;
      if (origins.size > 10_000) origins.clear();
      origins.set(t, o);
    }
    return o;
  };

  return async (req, res, requestId) => {
    const started = performance.now();
    const method = req.method ?? 'GET';
    // While draining, HTTP/1.1 keep-alive connections close after their response, so clients reconnect
    // (to another replica once this one is out of the endpoints).
    if (deps.drain.draining && 'shouldKeepAlive' in res) (res as { shouldKeepAlive: boolean }).shouldKeepAlive = false;
    const admissionRequest = { method, url: req.url ?? '', rawHeaders: req.rawHeaders, requestId, upgrade: false };
    const admitted = deps.admission.admit(admissionRequest);
    if (!admitted.admitted) {
      sendStatus(res, admitted.error, admitted.cluster, requestId);
      return;
    }
    const route = admitted.route;
    const kind: RequestKind = route.kind;
    const cluster = route.cluster;
    deps.metrics.requestStarted(kind);

    const target = deps.targetFor(cluster);
    const longRunning = isLongRunning(method, route.upstreamPath);
    const shortDone = longRunning ? undefined : deps.drain.shortStarted();
    const result = await forward(
      {
        dispatcher: longRunning ? deps.pools.streams : deps.pools.short,
        origin: originOf(target),
        servername: target.host,
        method,
        path: route.upstreamPath,
        headers: buildUpstreamHeaders({ rawHeaders: req.rawHeaders, clientAddress: req.socket?.remoteAddress, target: route.target, stripImpersonation: admitted.stripImpersonation }),
        body: hasBody(req) ? req : null,
        clientStallTimeoutMs: deps.clientStallTimeoutMs,
        responseHeaders: [REQUEST_ID_HEADER, requestId],
        longRunning,
        shutdown: deps.drain.shutdownSignal,
      },
      res,
    );
    shortDone?.();

    admitted.release();

    let status = result.statusCode ?? 0;
    if (result.errorBeforeHeaders !== undefined) {
      const err = result.errorBeforeHeaders;
      status = err.statusCode;
      if (!result.clientGone) sendStatus(res, withCluster(err, cluster), cluster, requestId);
    }
    const seconds = (performance.now() - started) / 1000;
    deps.metrics.requestFinished(kind, method, result.clientGone ? 0 : status, seconds, result.firstByteSeconds, cluster);
    if (deps.accessLog || result.errorBeforeHeaders !== undefined || result.errorAfterHeaders !== undefined) {
      const line = deps.admission.accessLine(admissionRequest, route, longRunning ? `${kind}-stream` : kind, status, seconds);
      line.bytes = result.bytes;
      if (result.errorBeforeHeaders !== undefined) line.error = result.errorBeforeHeaders.code;
      if (result.errorAfterHeaders !== undefined) line.abortedAfterHeaders = result.errorAfterHeaders.message;
      if (result.clientGone) line.clientGone = true;
      if (result.endedByShutdown) line.endedByShutdown = true;
      const failed = result.errorBeforeHeaders !== undefined && result.errorBeforeHeaders.statusCode >= 500;
      if (failed) deps.logger.warn({ ...line, detail: result.errorBeforeHeaders!.message }, 'request failed');
      else accessLogger.info(line, 'request');
    }
  };
}

/** Writes a proxy-made error as a Kubernetes Status, or aborts the response when headers already went out. */
export function sendStatus(res: ClientResponse, err: ProxyError, cluster?: string, requestId?: string): void {
  if (res.headersSent) {
    res.destroy(err);
    return;
  }
  if (res.destroyed) return;
  const { statusCode, headers, body } = renderStatusResponse(err, cluster);
  if (requestId !== undefined) headers[REQUEST_ID_HEADER] = requestId;
  res.writeHead(statusCode, headers);
  res.end(body);
}

function hasBody(req: ClientRequest): boolean {
  if ('stream' in req) return !req.stream.endAfterHeaders;
  const h = req.headers;
  return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
}
