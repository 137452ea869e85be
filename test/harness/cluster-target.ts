import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface TargetRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
}

export interface ClusterTarget {
  url: string;
  requests: TargetRequest[];
  /** Streams whose client went away before the stream ended. */
  aborted(): number;
  /** Closes every connection the target holds, as a crashing apiserver would. */
  close(): Promise<void>;
}

/**
 * Stands in for what sits behind a cluster's service-proxy (its kube-apiserver or a Service). It says
 * which cluster it is and serves:
 *   /slow?chunks=N&interval=MS   a chunked stream, one line per interval (watch / logs -f shape)
 *   /large?bytes=N               N bytes of a fixed pattern, with Content-Length
 *   /echo                        streams the request body back and ends with its sha256 in a trailer-free line
 *   /close                       answers with Connection: close
 *   /status/<code>               a Kubernetes Status with that code
 *   anything else                JSON describing the request as received
 */
export async function startClusterTarget(cluster: string, host: string): Promise<ClusterTarget> {
  const requests: TargetRequest[] = [];
  let aborted = 0;
  const server = http.createServer({ maxHeaderSize: 1 << 20 }, (req, res) => {
    requests.push({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders });
    const u = new URL(req.url!, 'http://x');
    const p = u.pathname;
    if (p === '/slow' || p.endsWith('/slow/log')) {
      const chunks = Number(u.searchParams.get('chunks') ?? 5);
      const interval = Number(u.searchParams.get('interval') ?? 200);
      res.writeHead(200, { 'content-type': 'text/plain', 'x-cluster': cluster });
      res.flushHeaders();
      let i = 0;
      const timer = setInterval(() => {
        res.write(`${cluster} line ${i}\n`);
        if (++i >= chunks) {
          clearInterval(timer);
          res.end();
        }
      }, interval);
      res.on('close', () => {
        clearInterval(timer);
        if (!res.writableFinished) aborted++;
      });
      return;
    }
    if (p === '/large') {
      const total = Number(u.searchParams.get('bytes') ?? 1024);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total), 'x-sha256': patternSha256(total) });
      writePattern(res, total);
      return;
    }
    if (p === '/echo') {
      const hash = createHash('sha256');
      let n = 0;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-cluster': cluster });
      req.on('data', (c: Buffer) => {
        hash.update(c);
        n += c.length;
        if (!res.write(c)) {
          req.pause();
          res.once('drain', () => req.resume());
        }
      });
      req.on('end', () => res.end());
      void n;
      return;
    }
    if (p === '/echo-sha') {
      const hash = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => {
        hash.update(c);
        n += c.length;
      });
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ cluster, bytes: n, sha256: hash.digest('hex') }));
      });
      return;
    }
    if (p === '/close') {
      res.writeHead(200, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ cluster, closed: true }));
      return;
    }
    const status = /^\/status\/(\d{3})$/.exec(p);
    if (status !== null) {
      const code = Number(status[1]);
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `target of ${cluster} says ${code}`, reason: 'Unauthorized', code }));
      return;
    }
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-cluster': cluster, 'set-cookie': ['a=1', 'b=2'] });
      res.end(JSON.stringify({ cluster, method: req.method, url: req.url, headers: req.headers }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}`,
    requests,
    aborted: () => aborted,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const PATTERN = Buffer.alloc(64 * 1024, 0);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = (i * 31 + 7) & 0xff;

/** Writes `total` bytes of a repeating pattern with backpressure. */
function writePattern(res: http.ServerResponse, total: number): void {
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, PATTERN.length);
      left -= n;
      const ok = res.write(n === PATTERN.length ? PATTERN : PATTERN.subarray(0, n));
      if (!ok) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

export function patternSha256(total: number): string {
  const h = createHash('sha256');
  let left = total;
  while (left > 0) {
    const n = Math.min(left, PATTERN.length);
    h.update(PATTERN.subarray(0, n));
    left -= n;
  }
  return h.digest('hex');
}
