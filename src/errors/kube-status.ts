import type { ProxyError } from './proxy-error.ts';

/** The body of a Kubernetes `Status` (meta/v1) failure, as clients such as client-go and kubectl parse it. */
export interface KubeStatus {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure';
  message: string;
  reason: string;
  details?: { name?: string; kind?: string; retryAfterSeconds?: number };
  code: number;
}

export function kubeStatusFor(err: ProxyError, cluster?: string): KubeStatus {
  const status: KubeStatus = {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: err.message,
    reason: err.reason,
    code: err.statusCode,
  };
  if (cluster !== undefined || err.retryAfterSeconds !== undefined) {
    status.details = {};
    if (cluster !== undefined) {
      status.details.name = cluster;
      status.details.kind = 'managedclusters';
    }
    if (err.retryAfterSeconds !== undefined) status.details.retryAfterSeconds = err.retryAfterSeconds;
  }
  return status;
}

/** Headers and body of the HTTP response that carries a proxy-made error. */
export function renderStatusResponse(err: ProxyError, cluster?: string): {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
} {
  const body = JSON.stringify(kubeStatusFor(err, cluster));
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
  };
  if (err.retryAfterSeconds !== undefined) headers['retry-after'] = String(err.retryAfterSeconds);
  return { statusCode: err.statusCode, headers, body };
}
