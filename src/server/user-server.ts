import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
import type { Http2SecureServer } from 'node:http2';
import Fastify, { LogController, type FastifyHttp2SecureOptions, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { proxyServerContext, serviceProxyContext, servingMaterial } from '../config/tls-files.ts';
import { ProxyError } from '../errors/proxy-error.ts';
import { Metrics } from '../observability/metrics.ts';
import type { TunnelOptions } from '../tunnel/anp-tunnel.ts';
import { compileTargetTemplate } from '../tunnel/target-host.ts';
import { createUpgradeHandler, type UpgradeHandler } from '../upgrade/upgrade-handler.ts';
import { asClientResponse } from '../upstream/forward.ts';
import { TunnelPools } from '../upstream/tunnel-pool.ts';
import { createProxyHandler, sendStatus } from './proxy-handler.ts';

export interface UserServer {
  app: FastifyInstance<Http2SecureServer>;
  metrics: Metrics;
  pools: TunnelPools;
  upgrades: UpgradeHandler;
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
}

/**
 * Wires the front (Fastify over HTTPS with HTTP/2 and HTTP/1.1), the proxy handler and the tunnel pools.
 * Fastify routes every method and path to one handler that takes the response over (hijack): the
 * handler streams, and Fastify must neither parse bodies nor send replies of its own.
 */
export function createUserServer(config: Config, logger: Logger, metrics = new Metrics()): UserServer {
  const proxyTls = proxyServerContext(config);
  const serviceProxyTls = serviceProxyContext(config);
  const tunnel: TunnelOptions = {
    proxy: config.proxy.transport === 'tcp'
      ? { transport: 'tcp', host: config.proxy.host, port: config.proxy.port, servername: config.proxy.servername }
      : { transport: 'uds', path: config.proxy.path },
    proxyTls: () => proxyTls,
    serviceProxyTls: () => serviceProxyTls,
    connectTimeoutMs: config.timeouts.connectMs,
    tlsHandshakeTimeoutMs: config.timeouts.tlsHandshakeMs,
    agentRetryAfterSeconds: config.agentRetryAfterSeconds,
    onDial: (r) => metrics.dialed(r),
    onTunnelOpen: () => metrics.tunnelOpened(),
    onTunnelClose: () => metrics.tunnelClosed(),
  };
  const pools = new TunnelPools(tunnel, {
    maxTunnelsPerCluster: config.limits.maxTunnelsPerCluster,
    maxStreamsPerCluster: config.limits.maxStreamsPerCluster,
    idleTimeoutMs: config.timeouts.idleTunnelMs,
    maxClusters: config.limits.maxClusters,
    headersTimeoutMs: config.timeouts.responseHeadersMs,
  });
  const targetFor = compileTargetTemplate(config.targetTemplate);

  const serving = servingMaterial(config);
  // Node reports each further parse failure of a broken connection again; answer it once.
  const answered = new WeakSet<Socket>();
  const idPrefix = randomBytes(4).toString('hex');
  let nextId = 0;
  const newRequestId = (): string => `${idPrefix}-${(nextId++).toString(36)}`;
  const options = {
    http2: true,
    https: {
      allowHTTP1: true,
      cert: serving.cert,
      key: serving.key,
      minVersion: config.server.minVersion,
      // HTTP/1.1 connections (maxHeaderSize) and HTTP/2 (SETTINGS_MAX_HEADER_LIST_SIZE) get the same bound.
      maxHeaderSize: config.server.maxHeaderBytes,
      settings: { maxHeaderListSize: config.server.maxHeaderBytes },
    },
    loggerInstance: logger,
    // The proxy handler writes one access line per request itself, with the fields operators need.
    logController: new LogController({ disableRequestLogging: true }),
    // Fastify would make a child logger per request (bindings run through every redaction path, ~12 us);
    // nothing logs through request.log: the handler's own lines carry the request id.
    childLoggerFactory: (parent: Logger) => parent,
    genReqId: newRequestId,
    // Long watches and `logs -f` must not be cut by the front; slow-header clients are bounded by Node's
    // headersTimeout (60 s) instead.
    connectionTimeout: 0,
    requestTimeout: 0,
    keepAliveTimeout: 75_000,
    return503OnClosing: true,
    // The handler parses the raw target itself; never let the router reject or rewrite it.
    routerOptions: { ignoreTrailingSlash: false, ignoreDuplicateSlashes: false, maxParamLength: 65_535 },
    frameworkErrors: (err: Error, _request: unknown, reply: { hijack(): void; raw: ServerResponse }) => {
      reply.hijack();
      sendStatus(asClientResponse(reply.raw), new ProxyError('BAD_PATH', `malformed request: ${err.message}`));
    },
    clientErrorHandler: (err: Error, socket: Socket) => {
      const tooLarge = (err as { code?: string }).code === 'HPE_HEADER_OVERFLOW';
      const status = tooLarge ? 431 : 400;
      const body = JSON.stringify({
        kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', code: status,
        reason: tooLarge ? 'RequestHeaderFieldsTooLarge' : 'BadRequest',
        message: tooLarge ? `request headers exceed ${config.server.maxHeaderBytes} bytes` : 'malformed HTTP request',
      });
      if (answered.has(socket)) return;
      answered.add(socket);
      if (!socket.writable) {
        socket.destroy();
        return;
      }
      // Written without end(): closing while the client is still sending makes the kernel reset the
      // connection, and the reset overtakes the answer. Connection: close lets the client hang up first.
      socket.write(`HTTP/1.1 ${status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      setTimeout(() => socket.destroy(), 2_000).unref();
    },
  };
  const app = Fastify(options as unknown as FastifyHttp2SecureOptions<Http2SecureServer>) as unknown as FastifyInstance<Http2SecureServer>;
  // Unlike http.Server, the HTTP/2 secure server leaves Nagle on. A response goes out as a header write
  // then body writes; with Nagle the body waits for the ACK of the headers, which a client may delay by
  // 40 ms: p50 was 44 ms and 86 req/s at 4 connections (bench/README.md).
  app.server.on('connection', (socket: Socket) => socket.setNoDelay(true));

  // Bodies are streamed to the managed cluster untouched: no parser may read them.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));

  const handle = createProxyHandler({
    pools,
    targetFor,
    metrics,
    logger,
    accessLog: config.log.access,
    maxRequestsPerCluster: config.limits.maxRequestsPerCluster,
    clientStallTimeoutMs: config.timeouts.clientStallMs,
  });
  app.route({
    method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: '*',
    handler: (request, reply) => {
      reply.hijack();
      return handle(request.raw, asClientResponse(reply.raw), request.id);
    },
  });

  // HTTP/1.1 upgrades never reach Fastify: Node hands over the socket itself (also on the HTTP/2 server,
  // for clients that negotiated http/1.1).
  const upgrades = createUpgradeHandler({
    tunnel,
    targetFor,
    metrics,
    logger,
    accessLog: config.log.access,
    maxUpgradesPerCluster: config.limits.maxUpgradesPerCluster,
    responseHeadersTimeoutMs: config.timeouts.responseHeadersMs,
    clientStallTimeoutMs: config.timeouts.clientStallMs,
    idleTimeoutMs: config.timeouts.upgradeIdleMs,
  });
  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => upgrades.handle(req, socket, head, newRequestId()));

  return {
    app,
    metrics,
    pools,
    upgrades,
    async listen() {
      await app.listen({ host: config.server.address, port: config.server.port });
      return app.server.address() as AddressInfo;
    },
    async close() {
      await Promise.all([app.close(), upgrades.closeAll()]);
      await pools.close();
    },
  };
}
