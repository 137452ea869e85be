/**
 * Every failure the proxy itself produces is a ProxyError with a stable code. The code decides the
 * HTTP status and the Kubernetes Status reason in one table, so the mapping lives in one place.
 */
export type ProxyErrorCode =
  | 'BAD_PATH'
  | 'MALFORMED_REQUEST'
  | 'METHOD_NOT_ALLOWED'
  | 'HEADERS_TOO_LARGE'
  | 'INVALID_CLUSTER_NAME'
  | 'INVALID_SERVICE'
  | 'DUPLICATE_IDENTITY_HEADER'
  | 'IMPERSONATION_REFUSED'
  | 'SERVICE_NOT_EXPOSED'
  | 'BAD_REQUEST_BODY'
  | 'TOO_MANY_REQUESTS'
  | 'CAPACITY_EXCEEDED'
  | 'AGENT_UNAVAILABLE'
  | 'PROXY_UNREACHABLE'
  | 'PROXY_TLS_FAILED'
  | 'PROXY_CONNECT_TIMEOUT'
  | 'PROXY_PROTOCOL_ERROR'
  | 'AGENT_DIAL_FAILED'
  | 'AGENT_DIAL_TIMEOUT'
  | 'SERVICE_PROXY_TLS_FAILED'
  | 'SERVICE_PROXY_TLS_TIMEOUT'
  | 'UPSTREAM_FAILED'
  | 'UPSTREAM_HEADERS_TIMEOUT'
  | 'UPGRADE_PROTOCOL_MISMATCH'
  | 'SHUTTING_DOWN';

interface CodeInfo {
  status: number;
  reason: string;
}

/** Kubernetes has no StatusReason for 502; "BadGateway" reads well in `kubectl` ("Error from server (BadGateway)"). */
const CODES: Record<ProxyErrorCode, CodeInfo> = {
  BAD_PATH: { status: 400, reason: 'BadRequest' },
  MALFORMED_REQUEST: { status: 400, reason: 'BadRequest' },
  METHOD_NOT_ALLOWED: { status: 405, reason: 'MethodNotAllowed' },
  HEADERS_TOO_LARGE: { status: 431, reason: 'RequestHeaderFieldsTooLarge' },
  INVALID_CLUSTER_NAME: { status: 400, reason: 'BadRequest' },
  INVALID_SERVICE: { status: 400, reason: 'BadRequest' },
  DUPLICATE_IDENTITY_HEADER: { status: 400, reason: 'BadRequest' },
  IMPERSONATION_REFUSED: { status: 403, reason: 'Forbidden' },
  SERVICE_NOT_EXPOSED: { status: 403, reason: 'Forbidden' },
  BAD_REQUEST_BODY: { status: 400, reason: 'BadRequest' },
  TOO_MANY_REQUESTS: { status: 429, reason: 'TooManyRequests' },
  CAPACITY_EXCEEDED: { status: 503, reason: 'ServiceUnavailable' },
  AGENT_UNAVAILABLE: { status: 503, reason: 'ServiceUnavailable' },
  SHUTTING_DOWN: { status: 503, reason: 'ServiceUnavailable' },
  PROXY_UNREACHABLE: { status: 502, reason: 'BadGateway' },
  PROXY_TLS_FAILED: { status: 502, reason: 'BadGateway' },
  PROXY_PROTOCOL_ERROR: { status: 502, reason: 'BadGateway' },
  AGENT_DIAL_FAILED: { status: 502, reason: 'BadGateway' },
  SERVICE_PROXY_TLS_FAILED: { status: 502, reason: 'BadGateway' },
  UPSTREAM_FAILED: { status: 502, reason: 'BadGateway' },
  UPGRADE_PROTOCOL_MISMATCH: { status: 502, reason: 'BadGateway' },
  PROXY_CONNECT_TIMEOUT: { status: 504, reason: 'Timeout' },
  AGENT_DIAL_TIMEOUT: { status: 504, reason: 'Timeout' },
  SERVICE_PROXY_TLS_TIMEOUT: { status: 504, reason: 'Timeout' },
  UPSTREAM_HEADERS_TIMEOUT: { status: 504, reason: 'Timeout' },
};

export interface ProxyErrorOptions {
  cause?: unknown;
  /** Seconds a client should wait before retrying; sent as Retry-After and details.retryAfterSeconds. */
  retryAfterSeconds?: number;
}

export class ProxyError extends Error {
  override readonly name = 'ProxyError';
  readonly code: ProxyErrorCode;
  readonly statusCode: number;
  readonly reason: string;
  readonly retryAfterSeconds: number | undefined;

  constructor(code: ProxyErrorCode, message: string, options: ProxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    const info = CODES[code];
    this.code = code;
    this.statusCode = info.status;
    this.reason = info.reason;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export function isProxyError(err: unknown): err is ProxyError {
  return err instanceof ProxyError;
}

/** Prefixes the cluster so a client juggling several clusters sees which one failed. */
export function withCluster(err: ProxyError, cluster: string): ProxyError {
  if (err.statusCode < 500) return err;
  const options: ProxyErrorOptions = { cause: err.cause };
  if (err.retryAfterSeconds !== undefined) options.retryAfterSeconds = err.retryAfterSeconds;
  return new ProxyError(err.code, `cluster ${cluster}: ${err.message}`, options);
}
