import type { Logger } from 'pino';
import { ProxyError, isProxyError } from '../errors/proxy-error.ts';
import type { Metrics } from '../observability/metrics.ts';
import { addKubeRequestFields } from '../observability/request-info.ts';
import { checkIdentityHeaders, type ImpersonationPolicy } from '../routing/identity-headers.ts';
import { parseRequestTarget, type Route } from '../routing/request-target.ts';
import type { ServiceAllowlist } from '../routing/service-allowlist.ts';
import { PerClusterLimit } from './per-cluster-limit.ts';

/**
 * The one gate every request passes before anything is dialled, plain requests and upgrades alike:
 *   1. the raw target is parsed into a cluster and a route (400);
 *   2. identity headers: duplicate Authorization or Host, `:authority` against Host, and the
 *      `--impersonation` policy (400, 403);
 *   3. a Service route must be on the exposed-services allowlist (403; kube-apiserver routes are exempt);
 *   4. the cluster's in-flight limit, requests and upgraded sessions counted apart (429).
 * A refusal is counted and logged here; the caller only writes the Status it is handed. The same module
 * builds the fields every access line starts with, so both paths log alike.
 */
export interface AdmissionDeps {
  metrics: Metrics;
  logger: Logger;
  accessLog: boolean;
  maxRequestsPerCluster: number;
  maxUpgradesPerCluster: number;
  impersonation: ImpersonationPolicy;
  /** The allowlist in force now (it is reloaded from its file). */
  allowlist: () => ServiceAllowlist;
}

export interface AdmissionRequest {
  method: string;
  /** The raw request target. */
  url: string;
  /** Node's rawHeaders: every field as received, pseudo-headers included on HTTP/2. */
  rawHeaders: readonly string[];
  requestId: string;
  /** An HTTP/1.1 upgrade (exec, attach, port-forward): counted against the upgrade limit. */
  upgrade: boolean;
}

export interface Admitted {
  admitted: true;
  route: Route;
  /** For buildUpstreamHeaders: drop client Impersonate-* headers. */
  stripImpersonation: boolean;
  /** Gives the per-cluster slot back; call exactly once, when the request or session is over. */
  release(): void;
}

export interface Refused {
  admitted: false;
  error: ProxyError;
  /** Known once the target parsed; names the cluster in the Status. */
  cluster: string | undefined;
}

export type Admission = Admitted | Refused;

export interface Admitter {
  admit(req: AdmissionRequest): Admission;
  /** The fields every access line starts with; the caller adds its own (bytes, end, error...). */
  accessLine(req: AdmissionRequest, route: Route, kind: string, status: number, seconds: number): Record<string, unknown>;
}

export function createAdmission(deps: AdmissionDeps): Admitter {
  const requests = new PerClusterLimit(deps.maxRequestsPerCluster);
  const upgrades = new PerClusterLimit(deps.maxUpgradesPerCluster);
  const stripImpersonation = deps.impersonation === 'strip';

  const refuse = (req: AdmissionRequest, error: ProxyError, route: Route | undefined): Refused => {
    deps.metrics.requestRejected(req.method, error.statusCode);
    deps.metrics.proxyError(error);
    if (deps.accessLog) {
      const line: Record<string, unknown> = { reqId: req.requestId };
      if (route !== undefined) line.cluster = route.cluster;
      line.kind = req.upgrade ? 'upgrade' : (route?.kind ?? 'unknown');
      line.method = req.method;
      if (route !== undefined) line.path = route.upstreamPathname;
      line.status = error.statusCode;
      line.error = error.code;
      line.detail = error.message;
      deps.logger.info(line, 'rejected');
    }
    return { admitted: false, error, cluster: route?.cluster };
  };

  return {
    admit(req) {
      let route: Route;
      try {
        route = parseRequestTarget(req.url);
      } catch (err) {
        return refuse(req, isProxyError(err) ? err : new ProxyError('BAD_PATH', String(err)), undefined);
      }
      const identity = checkIdentityHeaders(req.rawHeaders, deps.impersonation);
      if (identity !== undefined) return refuse(req, identity, route);
      const framing = checkTransferEncoding(req.rawHeaders);
      if (framing !== undefined) return refuse(req, framing, route);
      if (route.kind === 'service' && !deps.allowlist().allows(route.target)) {
        const t = route.target;
        return refuse(req, new ProxyError('SERVICE_NOT_EXPOSED', `service ${t.namespace}/${t.service} is not in the exposed services allowlist`), route);
      }
      const cluster = route.cluster;
      const limit = req.upgrade ? upgrades : requests;
      if (!limit.tryAcquire(cluster)) {
        const e = req.upgrade
          ? new ProxyError('TOO_MANY_REQUESTS', `too many upgraded sessions (exec, attach, port-forward) open to cluster ${cluster} (limit ${limit.limit}); retry later`, { retryAfterSeconds: 5 })
          : new ProxyError('TOO_MANY_REQUESTS', `too many requests in flight to cluster ${cluster} (limit ${limit.limit}); retry shortly`, { retryAfterSeconds: 1 });
        return refuse(req, e, route);
      }
      let released = false;
      return {
        admitted: true,
        route,
        stripImpersonation,
        release() {
          if (released) return;
          released = true;
          limit.release(cluster);
        },
      };
    },

    accessLine(req, route, kind, status, seconds) {
      const line: Record<string, unknown> = {
        reqId: req.requestId,
        cluster: route.cluster,
        kind,
        method: req.method,
        path: route.upstreamPathname,
        status,
        durationMs: Math.round(seconds * 1000),
      };
      if (route.kind === 'kube') addKubeRequestFields(line, req.method, route.upstreamPath);
      return line;
    },
  };
}

/**
 * A Transfer-Encoding other than `chunked` alone. llhttp lets such a request through as far as its
 * 'request' event and fails it only where the body starts, so without this a tunnel would be dialled for
 * a request that can never be framed. Go's server, the service-proxy, answers any other coding 501 anyway;
 * HTTP/2 forbids the field (nghttp2 resets the stream).
 */
function checkTransferEncoding(rawHeaders: readonly string[]): ProxyError | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    // The length first: this runs on every request, and almost no header is 17 characters long.
    if (name.length !== 17 || name.toLowerCase() !== 'transfer-encoding') continue;
    if (rawHeaders[i + 1]!.trim().toLowerCase() !== 'chunked') return new ProxyError('MALFORMED_REQUEST', 'unsupported Transfer-Encoding: only "chunked" is accepted');
  }
  return undefined;
}
