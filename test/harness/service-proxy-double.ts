import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
}

export interface ServiceProxyDouble {
  address: AddressInfo;
  received: ReceivedRequest[];
  /** Serves a new certificate to new connections from now on, as a rotated service-proxy would. */
  setCertificate(cert: Buffer, key: Buffer): void;
  close(): Promise<void>;
}

// Go's http.Server default (DefaultMaxHeaderBytes), which the real service-proxy and apiserver use.
export const GO_MAX_HEADER_BYTES = 1 << 20;

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/**
 * The managed-cluster service-proxy as upstream-user-server.md section 2.4 describes it: TLS on 7443 with a
 * certificate for *.open-cluster-management.proxy, 400 "invalid request headers" unless all four
 * Cluster-Proxy-* headers are set, (https, default, kubernetes, 443) -> the kube target, any other
 * service -> `targets["<proto>://<svc>.<ns>.svc:<port>"]`, an unknown or unreachable target -> 502 with an
 * empty body. Host is kept and X-Forwarded-For appended, as the Go ReverseProxy does. Upgrade requests
 * are relayed to the target and then spliced byte for byte, as the ReverseProxy does after a 101.
 */
export async function startServiceProxyDouble(opts: {
  host: string;
  port: number;
  cert: Buffer;
  key: Buffer;
  kubeTarget: string;
  /** CA for https targets (a real kube-apiserver). */
  targetCa?: Buffer;
  services?: Record<string, string>;
  /** Idle keep-alive timeout of client connections (Node's default is 5 s; 0 = none, as a Go server without IdleTimeout). */
  keepAliveTimeoutMs?: number;
}): Promise<ServiceProxyDouble> {
  const received: ReceivedRequest[] = [];
  const server = https.createServer({ cert: opts.cert, key: opts.key, ALPNProtocols: ['http/1.1'], maxHeaderSize: GO_MAX_HEADER_BYTES }, (req, res) => {
    received.push({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders });
    const proto = req.headers['cluster-proxy-proto'];
    const ns = req.headers['cluster-proxy-namespace'];
    const svc = req.headers['cluster-proxy-service'];
    const port = req.headers['cluster-proxy-port'];
    if (!proto || !ns || !svc || !port) {
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end('invalid request headers\n');
      return;
    }
    const key = `${proto}://${svc}.${ns}.svc:${port}`;
    const target = proto === 'https' && svc === 'kubernetes' && ns === 'default' && port === '443' ? opts.kubeTarget : opts.services?.[key];
    if (target === undefined) {
      req.resume();
      res.writeHead(502).end();
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    const xff = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = xff ? `${xff}, ${req.socket.remoteAddress}` : req.socket.remoteAddress!;
    // Host, port and the raw path are given apart: a URL object would normalise dot segments.
    const t = new URL(target);
    const secure = t.protocol === 'https:';
    const up = (secure ? https : http).request({ host: t.hostname, port: t.port, path: req.url, method: req.method, headers, agent: secure ? keepAliveTls : keepAlive }, (ures) => {
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(ures.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      if (ures.headers.connection === 'close') out.connection = 'close';
      res.writeHead(ures.statusCode!, out);
      res.flushHeaders();
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    up.on('error', () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  if (opts.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = opts.keepAliveTimeoutMs;
  const upgraded = new Set<Duplex>();
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    received.push({ method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders });
    socket.on('error', () => socket.destroy());
    const h = req.headers;
    const proto = h['cluster-proxy-proto'];
    const key = `${proto}://${h['cluster-proxy-service']}.${h['cluster-proxy-namespace']}.svc:${h['cluster-proxy-port']}`;
    const target = proto === 'https' && key === 'https://kubernetes.default.svc:443' ? opts.kubeTarget : opts.services?.[key];
    if (!proto || !h['cluster-proxy-namespace'] || !h['cluster-proxy-service'] || !h['cluster-proxy-port'] || target === undefined) {
      socket.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const t = new URL(target);
    const up = t.protocol === 'https:' ? tls.connect({ host: t.hostname, port: Number(t.port), ca: opts.targetCa }) : net.connect({ host: t.hostname, port: Number(t.port) });
    upgraded.add(socket);
    socket.on('close', () => {
      upgraded.delete(socket);
      up.destroy();
    });
    up.on('error', () => socket.destroy());
    up.on('close', () => socket.destroy());
    let headText = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i]!.toLowerCase() === 'x-forwarded-for') continue;
      headText += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    }
    const xff = h['x-forwarded-for'];
    headText += `X-Forwarded-For: ${xff ? `${xff}, ` : ''}${req.socket.remoteAddress}\r\n\r\n`;
    up.write(headText);
    if (head.length > 0) up.write(head);
    socket.pipe(up);
    up.pipe(socket);
  });
  const keepAlive = new http.Agent({ keepAlive: true });
  const keepAliveTls = new https.Agent({ keepAlive: true, ca: opts.targetCa });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, resolve);
  });
  return {
    address: server.address() as AddressInfo,
    received,
    setCertificate: (cert, key) => server.setSecureContext({ cert, key }),
    close: () =>
      new Promise((resolve) => {
        keepAlive.destroy();
        keepAliveTls.destroy();
        for (const s of upgraded) s.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
