import { createHash } from 'node:crypto';
import type { TunnelTarget } from './open-tunnel.ts';

/**
 * The CONNECT target for a cluster. Production agents register `host=cluster-<first 48 hex of
 * sha256(name)>.open-cluster-management.proxy` and map it to their service-proxy on 7443
 * (upstream-user-server.md section 1.6), so that is the default.
 */
export const DEFAULT_TARGET_TEMPLATE = 'cluster-{hash}.open-cluster-management.proxy:7443';

const PLACEHOLDER = /\{(hash|cluster)\}/g;
const CACHE_LIMIT = 10_000;

export function clusterHash(cluster: string): string {
  return createHash('sha256').update(cluster).digest('hex').slice(0, 48);
}

/**
 * Validates a template once and returns the per-cluster resolver. Placeholders: {hash} (48 hex chars)
 * and {cluster} (the validated cluster name). Results are memoised: the hash would otherwise run on every
 * request.
 */
export function compileTargetTemplate(template: string): (cluster: string) => TunnelTarget {
  const colon = template.lastIndexOf(':');
  if (colon <= 0) throw new Error(`target template ${JSON.stringify(template)} must be host:port`);
  const hostPart = template.slice(0, colon);
  const portText = template.slice(colon + 1);
  const port = Number(portText);
  if (!/^[1-9]\d{0,4}$/.test(portText) || port > 65535) {
    throw new Error(`target template ${JSON.stringify(template)} must end with a port number from 1 to 65535`);
  }
  const stripped = hostPart.replace(PLACEHOLDER, 'x');
  if (!/^[a-z0-9.-]+$/i.test(stripped) || stripped.includes('{') || stripped.includes('}')) {
    throw new Error(`target template ${JSON.stringify(template)} has characters a host name cannot have (placeholders are {hash} and {cluster})`);
  }
  if (!hostPart.includes('{hash}') && !hostPart.includes('{cluster}')) {
    throw new Error(`target template ${JSON.stringify(template)} must contain {hash} or {cluster}, or every cluster would get the same target`);
  }
  const cache = new Map<string, TunnelTarget>();
  return (cluster) => {
    let target = cache.get(cluster);
    if (target === undefined) {
      const host = hostPart.replace(PLACEHOLDER, (_m, name: string) => (name === 'hash' ? clusterHash(cluster) : cluster));
      target = { host, port };
      if (cache.size >= CACHE_LIMIT) cache.clear();
      cache.set(cluster, target);
    }
    return target;
  };
}
