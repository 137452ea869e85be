// The floor: the smallest proxy that does this user-server's job, to measure what everything above the
// tunnel costs (issue 12). node:http2 front with HTTP/1.1 fallback, as the user-server's; the raw target
// split at its second slash; the project's own dialers (gRPC or CONNECT) and tunnel pools; an undici
// handler that relays with backpressure. No framework, logs, metrics, request ids, limits, allowlist,
// identity checks, drain or error bodies. It takes the user-server's flags (the ones it uses).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { loadConfig } from '../../src/config/config.ts';
import { createDialer, dialerSettingsFrom } from '../../src/tunnel/create-dialer.ts';
import { openTunnel, type TunnelOptions } from '../../src/tunnel/open-tunnel.ts';
import { compileTargetTemplate } from '../../src/tunnel/target-host.ts';
import { TunnelPools, poolLimitsFrom } from '../../src/upstream/tunnel-pool.ts';

const { config } = loadConfig(process.argv.slice(2), {});
if (config === undefined) process.exit(2);

const proxyTls = config.proxy.transport === 'tcp'
  ? tls.createSecureContext({ ca: readFileSync(config.proxy.caFile), cert: readFileSync(config.proxy.certFile), key: readFileSync(config.proxy.keyFile) })
  : undefined;
const dialer = createDialer(dialerSettingsFrom(config, () => proxyTls));
const serviceProxyTls = tls.createSecureContext({ ca: readFileSync(config.serviceProxyCaFile) });
const tunnel: TunnelOptions = { dialer, serviceProxyTls: () => serviceProxyTls, tlsHandshakeTimeoutMs: config.timeouts.tlsHandshakeMs };
const pools = new TunnelPools(tunnel, poolLimitsFrom(config));
const targetFor = compileTargetTemplate(config.targetTemplate);

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);
const KUBE = ['Cluster-Proxy-Proto', 'https', 'Cluster-Proxy-Namespace', 'default', 'Cluster-Proxy-Service', 'kubernetes', 'Cluster-Proxy-Port', '443'];

type Req = http.IncomingMessage | http2.Http2ServerRequest;
// Both have the calls used here; the HTTP/1.1 type stands for either.
type Res = http.ServerResponse;

function handle(req: Req, res: Res): void {
  const url = req.url ?? '/';
  const slash = url.indexOf('/', 1);
  if (slash < 2) {
    res.writeHead(400).end();
    return;
  }
  const target = targetFor(url.slice(1, slash));
  const headers: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.charCodeAt(0) === 58 /* ':' */) {
      if (name === ':authority') headers.push('host', raw[i + 1]!);
      continue;
    }
    if (!HOP.has(name.toLowerCase())) headers.push(name, raw[i + 1]!);
  }
  headers.push(...KUBE);
  const body = req.method === 'GET' || req.method === 'HEAD' ? null : req;
  const opts: Dispatcher.DispatchOptions & { servername: string } = {
    origin: `https://${target.host}:${target.port}`,
    servername: target.host,
    path: url.slice(slash),
    method: req.method ?? 'GET',
    headers,
    body,
  };
  let controller: Dispatcher.DispatchController | undefined;
  res.on('close', () => controller?.abort(new Error('client went away')));
  const watching = url.includes('watch=true') || url.includes('follow=true');
  (watching ? pools.streams : pools.short).dispatch(opts, {
    onRequestStart(c) {
      controller = c;
    },
    onResponseStart(c, status) {
      const out: string[] = [];
      const h = (c as unknown as { rawHeaders: Buffer[] }).rawHeaders;
      for (let i = 0; i < h.length; i += 2) {
        const name = h[i]!.toString('latin1');
        if (!HOP.has(name.toLowerCase())) out.push(name, h[i + 1]!.toString('latin1'));
      }
      res.writeHead(status, out);
      if (watching) res.flushHeaders?.();
    },
    onResponseData(c, chunk) {
      if (!res.write(chunk)) {
        c.pause();
        res.once('drain', () => c.resume());
      }
    },
    onResponseEnd() {
      res.end();
    },
    onResponseError(_c, err) {
      if (res.headersSent) res.destroy(err);
      else res.writeHead(502).end();
    },
  });
}

const server = http2.createSecureServer(
  { cert: readFileSync(config.server.certFile), key: readFileSync(config.server.keyFile), allowHTTP1: true, settings: { maxConcurrentStreams: 250 } },
  (req, res) => handle(req, res as unknown as Res),
);
// exec over WebSocket or SPDY: a tunnel of its own, the request head written as received (plus the
// kube target), then bytes both ways until either side closes.
server.on('upgrade', (req: http.IncomingMessage, client: Duplex, head: Buffer) => {
  client.on('error', () => client.destroy());
  const url = req.url ?? '/';
  const slash = url.indexOf('/', 1);
  if (slash < 2) {
    client.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  openTunnel(tunnel, { ...targetFor(url.slice(1, slash)), http2: false }).then(
    (up) => {
      up.on('error', () => client.destroy());
      client.on('close', () => up.destroy());
      up.on('close', () => client.destroy());
      let text = `${req.method} ${url.slice(slash)} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) text += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      for (let i = 0; i < KUBE.length; i += 2) text += `${KUBE[i]}: ${KUBE[i + 1]}\r\n`;
      up.write(`${text}\r\n`);
      if (head.length > 0) up.write(head);
      client.pipe(up);
      up.pipe(client);
    },
    () => client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n'),
  );
});
server.listen(config.server.port, config.server.address);
const health = http.createServer((_req, res) => res.end('ok'));
health.listen(config.health.port, config.health.address);
process.on('SIGTERM', () => {
  server.close();
  health.close();
  void pools.destroy().finally(() => process.exit(0));
});
