import { ProxyError } from '../errors/proxy-error.ts';
import { isDns1123Label, isDns1123Subdomain, isPortNumber } from './names.ts';

/** Where the service-proxy on the managed cluster sends the request (the four Cluster-Proxy-* headers). */
export interface ServiceTarget {
  proto: 'https' | 'http';
  namespace: string;
  service: string;
  port: string;
}

export type RouteKind = 'kube' | 'service';

export interface Route {
  cluster: string;
  kind: RouteKind;
  /** Path and query to send upstream, taken from the raw request target without decoding. */
  upstreamPath: string;
  /** Upstream path without its query, for logs. */
  upstreamPathname: string;
  target: ServiceTarget;
}

export const KUBE_API_TARGET: Readonly<ServiceTarget> = Object.freeze({
  proto: 'https',
  namespace: 'default',
  service: 'kubernetes',
  port: '443',
});

const USAGE = 'request path must be /<cluster>/<path>, for example /cluster1/api/v1/namespaces';

/**
 * Splits a raw request target `/<cluster>/<rest>[?query]` into the cluster and the upstream request.
 * Works on the bytes as received: nothing is decoded or cleaned, so percent-escapes, `//` and dot
 * segments reach the managed cluster exactly as the client sent them (upstream double-encodes them).
 */
export function parseRequestTarget(rawTarget: string): Route {
  if (rawTarget.charCodeAt(0) !== 0x2f) {
    throw new ProxyError('BAD_PATH', `${USAGE}; got a request target that does not start with "/"`);
  }
  const q = rawTarget.indexOf('?');
  const pathname = q === -1 ? rawTarget : rawTarget.slice(0, q);
  const query = q === -1 ? '' : rawTarget.slice(q);
  const slash = pathname.indexOf('/', 1);
  if (slash === -1) {
    throw new ProxyError('BAD_PATH', `${USAGE}; got ${JSON.stringify(truncate(pathname))}`);
  }
  const cluster = pathname.slice(1, slash);
  if (!isDns1123Subdomain(cluster)) {
    throw new ProxyError(
      'INVALID_CLUSTER_NAME',
      `invalid cluster name ${JSON.stringify(truncate(cluster))}: a ManagedCluster name is a lowercase RFC 1123 subdomain (a-z, 0-9, '-' and '.', at most 253 characters)`,
    );
  }
  const rest = pathname.slice(slash);
  const service = matchServiceProxy(rest);
  if (service === undefined) {
    return { cluster, kind: 'kube', upstreamPath: rest + query, upstreamPathname: rest, target: KUBE_API_TARGET };
  }
  return {
    cluster,
    kind: 'service',
    upstreamPath: service.path + query,
    upstreamPathname: service.path,
    target: service.target,
  };
}

/**
 * Upstream detects a service request by splitting the target on "/": more than 9 segments (counting
 * the empty one before the leading slash and the cluster) and segment 8 equal to "proxy-service";
 * segments api/v1/namespaces/services are not checked. `rest` starts after the cluster, so the same
 * rule is: more than 7 segments here and segment 6 is "proxy-service". Unlike upstream, the query is
 * not part of the split, so a "/" inside a query can never turn a request into a service request.
 */
function matchServiceProxy(rest: string): { path: string; target: ServiceTarget } | undefined {
  // rest = /api/v1/namespaces/<ns>/services/<svc>/proxy-service/<path...>
  let pos = 0;
  const bounds: number[] = [];
  for (let i = 0; i < 7; i++) {
    pos = rest.indexOf('/', pos + 1);
    if (pos === -1) return undefined;
    bounds.push(pos);
  }
  // bounds[i] is the slash that ends segment i (segments counted from the first after the cluster).
  if (rest.slice(bounds[5]! + 1, bounds[6]) !== 'proxy-service') return undefined;
  const namespace = rest.slice(bounds[2]! + 1, bounds[3]);
  const serviceSegment = rest.slice(bounds[4]! + 1, bounds[5]);
  return { path: rest.slice(bounds[6]), target: parseServiceSegment(namespace, serviceSegment) };
}

/** `[scheme:]name[:port]`, apimachinery's SplitSchemeNamePort, then stricter checks for clear errors. */
function parseServiceSegment(namespace: string, segment: string): ServiceTarget {
  const parts = segment.split(':');
  let scheme = '';
  let name: string;
  let port = '';
  if (parts.length === 1) {
    name = parts[0]!;
  } else if (parts.length === 2) {
    name = parts[0]!;
    port = parts[1]!;
  } else if (parts.length === 3) {
    scheme = parts[0]!;
    name = parts[1]!;
    port = parts[2]!;
  } else {
    throw invalidService(segment, 'expected [scheme:]name:port');
  }
  if (scheme !== '' && scheme !== 'https' && scheme !== 'http') {
    throw invalidService(segment, `scheme must be https or http, got ${JSON.stringify(truncate(scheme))}`);
  }
  if (!isDns1123Label(name)) throw invalidService(segment, 'the service name must be a lowercase RFC 1123 label');
  if (!isPortNumber(port)) {
    throw invalidService(segment, port === '' ? 'a port is required ([scheme:]name:port)' : 'the port must be a number from 1 to 65535');
  }
  if (!isDns1123Label(namespace)) {
    throw new ProxyError('INVALID_SERVICE', `invalid namespace ${JSON.stringify(truncate(namespace))}: must be a lowercase RFC 1123 label`);
  }
  return { proto: scheme === 'http' ? 'http' : 'https', namespace, service: name, port };
}

function invalidService(segment: string, why: string): ProxyError {
  return new ProxyError('INVALID_SERVICE', `invalid service ${JSON.stringify(truncate(segment))}: ${why}`);
}

/** Keeps client-controlled text in messages and logs short. */
function truncate(s: string): string {
  return s.length > 128 ? `${s.slice(0, 128)}...` : s;
}
