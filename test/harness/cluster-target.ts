import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';

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
  /**
   * How long a /large response whose URL contains `urlPart` has been blocked on a write that has not
   * drained (0 when it is not blocked): sustained, it means every buffer on the way to a paused client is full.
   */
  blockedMs(urlPart: string): number;
  /** Request bodies /echo-sha received whole (its end arrived), by the request's x-request-id. */
  bodiesCompleted: Map<string, number>;
  /** Upgraded connections (WebSocket or raw) the target holds open now. */
  openUpgrades(): number;
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
 *   /reset-mid-body?bytes=N      announces N bytes (Content-Length), sends half, then resets the connection (RST)
 *   /status/<code>               a Kubernetes Status with that code
 *   anything else                JSON describing the request as received
 * and, for upgrade requests (exec, attach, port-forward):
 *   /upgrade/refuse[?status=N]   403 (or N) Status, chunked, on a connection kept open (as an apiserver refuses)
 *   /upgrade/switch?to=P         101 with Upgrade: P (none when P is empty), whatever was asked for
 *   /upgrade/hang                never answers
 *   Upgrade: websocket           a WebSocket echo that picks the first of v5/v4.channel.k8s.io offered;
 *                                the text "close:<code>" closes with that code, "bytes:<n>" sends n bytes
 *   any other Upgrade (SPDY/3.1) 101, then every byte echoed; "bye" in the stream makes the target end it
 */
export async function startClusterTarget(cluster: string, host: string): Promise<ClusterTarget> {
  const requests: TargetRequest[] = [];
  const bodiesCompleted = new Map<string, number>();
  const blockedSince = new Map<string, number>();
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
      writePattern(res, total, (blocked) => (blocked ? blockedSince.set(req.url!, Date.now()) : blockedSince.delete(req.url!)));
      res.on('close', () => blockedSince.delete(req.url!));
      return;
    }
    if (p === '/reset-mid-body') {
      const total = Number(u.searchParams.get('bytes') ?? 1 << 20);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
      // As an apiserver that crashes mid-response: what was written goes out, then RST instead of the rest.
      res.write(Buffer.alloc(total >> 1, 0x61), () => req.socket.resetAndDestroy());
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
        bodiesCompleted.set(String(req.headers['x-request-id']), n);
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
  const upgraded = new Set<Duplex>();
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => ['v5.channel.k8s.io', 'v4.channel.k8s.io'].find((p) => offered.has(p)) ?? false,
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    requests.push({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders });
    upgraded.add(socket);
    socket.on('close', () => upgraded.delete(socket));
    socket.on('error', () => socket.destroy());
    // The server's sockets are half-open capable: a peer's end must close this side too, as Go's server does.
    socket.on('end', () => socket.end());
    const u = new URL(req.url!, 'http://x');
    const p = u.pathname;
    if (p === '/upgrade/hang') return;
    if (p === '/upgrade/switch') {
      const to = u.searchParams.get('to') ?? '';
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n${to === '' ? '' : `Upgrade: ${to}\r\n`}X-Cluster: ${cluster}\r\n\r\n`);
      socket.on('data', () => {});
      return;
    }
    if (p === '/upgrade/refuse') {
      const code = Number(u.searchParams.get('status') ?? 403);
      const reason = code === 403 ? 'Forbidden' : 'InternalError';
      const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `upgrade refused by ${cluster}`, reason, code });
      socket.write(`HTTP/1.1 ${code} ${code === 403 ? 'Forbidden' : 'Internal Server Error'}\r\nContent-Type: application/json\r\nX-Request-Id: from-the-cluster\r\nTransfer-Encoding: chunked\r\n\r\n`);
      socket.write(`${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
      return;
    }
    if (req.headers.upgrade?.toLowerCase() === 'websocket') {
      socket.removeAllListeners('end');
      wss.handleUpgrade(req, socket, head, (ws) => {
        ws.on('message', (data, isBinary) => {
          const text = isBinary ? '' : data.toString();
          if (text.startsWith('close:')) ws.close(Number(text.slice(6)), `closed by ${cluster}`);
          else if (text.startsWith('bytes:')) ws.send(Buffer.alloc(Number(text.slice(6)), 0x5a));
          else ws.send(data, { binary: isBinary });
        });
      });
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${req.headers.upgrade}\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Cluster: ${cluster}\r\n\r\n`);
    const echo = (chunk: Buffer): void => {
      if (!socket.write(chunk)) {
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
      if (chunk.includes('bye')) socket.end();
    };
    if (head.length > 0) echo(head);
    socket.on('data', echo);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}`,
    requests,
    bodiesCompleted,
    blockedMs: (part) => {
      for (const [url, since] of blockedSince) if (url.includes(part)) return Date.now() - since;
      return 0;
    },
    aborted: () => aborted,
    openUpgrades: () => upgraded.size,
    close: () =>
      new Promise((resolve) => {
        for (const s of upgraded) s.destroy();
        wss.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const PATTERN = Buffer.alloc(64 * 1024, 0);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = (i * 31 + 7) & 0xff;

/** Writes `total` bytes of a repeating pattern with backpressure, saying when a write blocks and when it drained. */
function writePattern(res: http.ServerResponse, total: number, onBlocked?: (blocked: boolean) => void): void {
  let left = total;
  const pump = (): void => {
    onBlocked?.(false);
    while (left > 0) {
      const n = Math.min(left, PATTERN.length);
      left -= n;
      const ok = res.write(n === PATTERN.length ? PATTERN : PATTERN.subarray(0, n));
      if (!ok) {
        onBlocked?.(true);
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
