import type { Logger } from 'pino';
import { renderStatusResponse } from '../errors/kube-status.ts';
import { type ProxyError, withCluster } from '../errors/proxy-error.ts';
import type { ClusterView } from '../observability/cluster-state.ts';
import type { Metrics, RequestKind } from '../observability/metrics.ts';
import { buildUpstreamHeaders } from '../routing/forward-headers.ts';
import { isLongRunning } from '../routing/long-running.ts';
import type { TunnelTarget } from '../tunnel/open-tunnel.ts';
import { forward, type ClientRequest, type ClientResponse } from '../upstream/forward.ts';
import type { TunnelPools } from '../upstream/tunnel-pool.ts';
import type { Admitter } from './admission.ts';
import type { CancelBudget } from './cancel-budget.ts';
import type { DrainState } from './drain.ts';

export interface ProxyHandlerDeps {
  pools: TunnelPools;
  targetFor: (cluster: string) => TunnelTarget;
  metrics: Metrics;
  /** Per-cluster state for the health port's view; undefined with --cluster-view=false. */
  clusters?: ClusterView | undefined;
  logger: Logger;
  accessLog: boolean;
  /** Route, identity headers, allowlist and per-cluster limit (shared with the upgrade path). */
  admission: Admitter;
  clientStallTimeoutMs: number;
  /** Bounds for finishing a cancelled short request upstream so that its tunnel is kept. */
  cancelledDrain: { maxBytes: number; timeoutMs: number };
  cancelBudget: CancelBudget;
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
    const view = deps.clusters?.requestStarted(cluster);

    const target = deps.targetFor(cluster);
    // Taken now: a reset stream no longer knows its session.
    const session = 'stream' in req ? req.stream.session : undefined;
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
        cancelledDrain: deps.cancelledDrain,
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
    // The proxy's own answer, when the client was still there to get it.
    const answered = result.clientGone ? undefined : result.errorBeforeHeaders;
    if (answered !== undefined) deps.metrics.proxyError(answered);
    view?.requestFinished(answered);
    if (result.retried) deps.metrics.tunnelRetried();
    if (result.drainedAfterCancel) deps.metrics.tunnelKeptAfterCancel();
    if (result.cancelCostTunnel) deps.cancelBudget.tunnelLost(session);
    if (deps.accessLog || result.errorBeforeHeaders !== undefined || result.errorAfterHeaders !== undefined) {
      const line = deps.admission.accessLine(admissionRequest, route, longRunning ? `${kind}-stream` : kind, status, seconds);
      line.bytes = result.bytes;
      if (result.errorBeforeHeaders !== undefined) line.error = result.errorBeforeHeaders.code;
      if (result.errorAfterHeaders !== undefined) line.abortedAfterHeaders = result.errorAfterHeaders.message;
      if (result.clientGone) line.clientGone = true;
      if (result.endedByShutdown) line.endedByShutdown = true;
      if (result.retried) line.retried = true;
      if (result.drainedAfterCancel) line.drainedAfterCancel = true;
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
