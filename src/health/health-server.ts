import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { isClusterSort, type ClusterView } from '../observability/cluster-state.ts';
import { CLUSTER_PAGE, CLUSTER_PAGE_CSP } from './cluster-page.ts';

export interface HealthState {
  /** Listening and certificates loaded. */
  ready: () => boolean;
  /** Shutting down: readiness fails at once so load balancers stop sending traffic. */
  draining: () => boolean;
}

/**
 * Plain-HTTP server for probes and scraping, on its own port so that probes never depend on the client
 * TLS setup: /healthz (the process answers), /readyz (able to serve, 503 while draining), /metrics, and
 * with the cluster view on, /clusters (JSON) and the page at / that shows it.
 */
export function createHealthServer(state: HealthState, registry: Registry, clusters?: ClusterView): http.Server {
  return http.createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/healthz' || path === '/livez') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      if (state.draining()) res.writeHead(503, { 'content-type': 'text/plain' }).end('draining\n');
      else if (!state.ready()) res.writeHead(503, { 'content-type': 'text/plain' }).end('not ready\n');
      else res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/metrics') {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
      );
    } else if (clusters !== undefined && path === '/clusters') {
      serveClusters(clusters, new URLSearchParams(q === -1 ? '' : url.slice(q + 1)), res);
    } else if (clusters !== undefined && path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': CLUSTER_PAGE_CSP, 'x-content-type-options': 'nosniff' }).end(CLUSTER_PAGE);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
}

/** GET /clusters[?sort=errors|name][&cluster=<name>]: the cluster view as JSON (README, "Operating it"). */
function serveClusters(clusters: ClusterView, query: URLSearchParams, res: http.ServerResponse): void {
  const json = (status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(`${JSON.stringify(body)}\n`);
  };
  const sort = query.get('sort') ?? 'name';
  if (!isClusterSort(sort)) {
    json(400, { error: 'sort must be errors or name', sort });
    return;
  }
  const name = query.get('cluster');
  if (name === null) {
    json(200, clusters.snapshot(sort));
    return;
  }
  const one = clusters.cluster(name);
  if (one === undefined) json(404, { error: 'cluster not seen recently by this replica', cluster: name });
  else json(200, one);
}

export function listenHealth(server: http.Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.removeListener('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
