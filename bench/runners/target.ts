// The workload behind the service-proxy double, as its own process. Every path is accepted (the
// apiserver paths the clients use are kept for realism); the query decides the answer:
//   ?bytes=N                      N bytes of the pattern, with Content-Length
//   ?watch=true                   a chunked stream whose headers are sent at once, then silence
//   ?watch=true&events=R          R events per second, one JSON line each, stamped with the write time
//   WebSocket upgrade (exec)      v5/v4.channel.k8s.io; every message is echoed back
// Prints {"url": ...} on stdout when listening.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { PATTERN, wallMs } from '../lib/payload.ts';

const host = process.argv[2] ?? '127.0.0.1';
const cache = new Map<number, Buffer>();

function body(bytes: number): Buffer {
  let b = cache.get(bytes);
  if (b === undefined) {
    b = Buffer.alloc(bytes);
    for (let off = 0; off < bytes; off += PATTERN.length) PATTERN.copy(b, off, 0, Math.min(PATTERN.length, bytes - off));
    cache.set(bytes, b);
  }
  return b;
}

function stream(res: http.ServerResponse, total: number): void {
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, PATTERN.length);
      left -= n;
      if (!res.write(n === PATTERN.length ? PATTERN : PATTERN.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

function events(res: http.ServerResponse, perSecond: number): void {
  const started = wallMs();
  let sent = 0;
  const pad = 'x'.repeat(200);
  // A 1 ms timer fires late and irregularly: each tick writes the events that are due, each stamped.
  const timer = setInterval(() => {
    const due = Math.floor(((wallMs() - started) * perSecond) / 1000);
    while (sent < due) {
      sent++;
      res.write(`{"type":"MODIFIED","seq":${sent},"t":${wallMs()},"pad":"${pad}"}\n`);
    }
  }, 1);
  res.on('close', () => clearInterval(timer));
}

const server = http.createServer((req, res) => {
  const q = req.url!.indexOf('?');
  const params = new URLSearchParams(q === -1 ? '' : req.url!.slice(q + 1));
  req.resume();
  if (params.get('watch') === 'true') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.flushHeaders();
    const rate = Number(params.get('events') ?? 0);
    if (rate > 0) events(res, rate);
    return;
  }
  const bytes = Number(params.get('bytes') ?? -1);
  if (!(bytes >= 0)) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('unknown bench request\n');
    return;
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes) });
  if (bytes <= 1 << 20) res.end(body(bytes));
  else stream(res, bytes);
});
const wss = new WebSocketServer({ noServer: true, handleProtocols: (offered) => ['v5.channel.k8s.io', 'v4.channel.k8s.io'].find((p) => offered.has(p)) ?? false });
server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
  socket.on('error', () => socket.destroy());
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data as Buffer, { binary: isBinary }));
  });
});
server.keepAliveTimeout = 120_000;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.maxConnections = 18_000;
server.listen(0, host, () => {
  process.stdout.write(`${JSON.stringify({ url: `http://${host}:${(server.address() as AddressInfo).port}` })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
