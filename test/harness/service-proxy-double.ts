import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';

export interface ReceivedRequest {
  method: string;
  url: string;
  /** As Go's server presents them: no pseudo-headers, and Host from `:authority` on HTTP/2. */
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  httpVersion: string;
}

export interface ServiceProxyDouble {
  address: AddressInfo;
  received: ReceivedRequest[];
  /** Client connections that negotiated h2, since the start. */
  h2Connections(): number;
  /** Serves a new certificate to new connections from now on, as a rotated service-proxy would. */
  setCertificate(cert: Buffer, key: Buffer): void;
  close(): Promise<void>;
}

// Go's http.Server default (DefaultMaxHeaderBytes), which the real service-proxy and apiserver use.
export const GO_MAX_HEADER_BYTES = 1 << 20;
// Go's HTTP/2 server default for SETTINGS_MAX_CONCURRENT_STREAMS.
export const GO_MAX_CONCURRENT_STREAMS = 250;

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;

function received(req: AnyRequest): ReceivedRequest {
  const headers: http.IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) if (!k.startsWith(':')) headers[k] = v as string | string[];
  const rawHeaders: string[] = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!req.rawHeaders[i]!.startsWith(':')) rawHeaders.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
  }
  const authority = req.headers[':authority'];
  if (headers.host === undefined && typeof authority === 'string') {
    headers.host = authority;
    rawHeaders.unshift('Host', authority);
  }
  return { method: req.method!, url: req.url!, headers, rawHeaders, httpVersion: req.httpVersion };
}

/**
 * The managed-cluster service-proxy as upstream-user-server.md section 2.4 describes it: TLS on 7443 with a
 * certificate for *.open-cluster-management.proxy, 400 "invalid request headers" unless all four
 * Cluster-Proxy-* headers are set, (https, default, kubernetes, 443) -> the kube target, any other
 * service -> `targets["<proto>://<svc>.<ns>.svc:<port>"]`, an unknown or unreachable target -> 502 with an
 * empty body. Host is kept and X-Forwarded-For appended, as the Go ReverseProxy does. Upgrade requests
 * are relayed to the target and then spliced byte for byte, as the ReverseProxy does after a 101.
 *
 * Like the real one (a Go http.Server started with ListenAndServeTLS, no NextProtos), it offers h2 and
 * http/1.1 by ALPN, with Go's stream limit; `http2: false` makes it an HTTP/1.1-only service-proxy.
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
  /** Offer h2 by ALPN as Go does (default true). */
  http2?: boolean;
}): Promise<ServiceProxyDouble> {
  const log: ReceivedRequest[] = [];
  const dropped = new Map<string, number>();
  const handle = (req: AnyRequest, res: http.ServerResponse): void => {
    const got = received(req);
    log.push(got);
    // A tunnel that dies just as a request arrives on it: the first x-test-drop-times (default 1)
    // requests carrying a given x-test-drop-connection token get their connection (the tunnel's TLS
    // session) destroyed without an answer; later ones with the same token are served.
    const drop = req.headers['x-test-drop-connection'];
    if (typeof drop === 'string' && (dropped.get(drop) ?? 0) < Number(req.headers['x-test-drop-times'] ?? 1)) {
      dropped.set(drop, (dropped.get(drop) ?? 0) + 1);
      req.socket.destroy();
      return;
    }
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
    for (const [k, v] of Object.entries(got.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    const xff = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = xff ? `${xff}, ${req.socket.remoteAddress}` : req.socket.remoteAddress!;
    // Host, port and the raw path are given apart: a URL object would normalise dot segments.
    const t = new URL(target);
    const secure = t.protocol === 'https:';
    let complete = false;
    const up = (secure ? https : http).request({ host: t.hostname, port: t.port, path: req.url, method: req.method, headers, agent: secure ? keepAliveTls : keepAlive }, (ures) => {
      ures.once('end', () => (complete = true));
      const out: Record<string, string | string[]> = {};
      for (const [k, v] of Object.entries(ures.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      if (ures.headers.connection === 'close' && req.httpVersion === '1.1') out.connection = 'close';
      res.writeHead(ures.statusCode!, out);
      res.flushHeaders();
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    up.on('error', () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end();
    });
    // A client that went away (h1: connection closed; h2: RST_STREAM) cancels the upstream request, as
    // Go's ReverseProxy does through the request context. (An h2 response reports writableFinished
    // after a reset, so completion is tracked on the upstream side.)
    res.on('close', () => {
      if (!complete) up.destroy();
    });
    req.pipe(up);
  };
  // One TLS listener; each connection goes by its ALPN result to an HTTP/2 or an HTTP/1.1 server.
  const h1 = http.createServer({ maxHeaderSize: GO_MAX_HEADER_BYTES }, handle);
  // maxSessionMemory (MB) is raised from Node's 10 so that the double never refuses streams
  // (ENHANCE_YOUR_CALM) on a busy session where Go, which has no such limit, would accept them.
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: GO_MAX_CONCURRENT_STREAMS }, maxSessionMemory: 64 }, (req, res) =>
    // The compatibility response has the calls used here (writeHead, flushHeaders, end, destroy).
    handle(req, res as unknown as http.ServerResponse),
  );
  if (opts.keepAliveTimeoutMs !== undefined) h1.keepAliveTimeout = opts.keepAliveTimeoutMs;
  const sockets = new Set<tls.TLSSocket>();
  let h2Count = 0;
  // noDelay as http.Server sets it (and Go's net package does): without it Nagle holds small responses.
  const server = tls.createServer({ cert: opts.cert, key: opts.key, noDelay: true, ALPNProtocols: opts.http2 === false ? ['http/1.1'] : ['h2', 'http/1.1'] }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (socket.alpnProtocol === 'h2') {
      h2Count++;
      h2.emit('connection', socket);
    } else {
      h1.emit('connection', socket);
    }
  });
  const upgraded = new Set<Duplex>();
  h1.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    log.push(received(req));
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
    received: log,
    h2Connections: () => h2Count,
    setCertificate: (cert, key) => server.setSecureContext({ cert, key }),
    close: () =>
      new Promise((resolve) => {
        keepAlive.destroy();
        keepAliveTls.destroy();
        for (const s of upgraded) s.destroy();
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
