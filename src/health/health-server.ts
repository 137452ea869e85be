import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface HealthState {
  /** Listening and certificates loaded. */
  ready: () => boolean;
  /** Shutting down: readiness fails at once so load balancers stop sending traffic. */
  draining: () => boolean;
}

/**
 * Plain-HTTP server for probes and scraping, on its own port so that probes never depend on the client
 * TLS setup: /healthz (the process answers), /readyz (able to serve, 503 while draining), /metrics.
 */
export function createHealthServer(state: HealthState, registry: Registry): http.Server {
  return http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
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
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
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
