import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import http2, { type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from 'node:http2';
import Fastify, { LogController, type FastifyHttp2SecureOptions, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { TlsReloader } from '../config/tls-reloader.ts';
import { ProxyError } from '../errors/proxy-error.ts';
import { ClusterView } from '../observability/cluster-state.ts';
import { Metrics } from '../observability/metrics.ts';
import { requestIdGenerator, saneRequestId } from '../observability/request-id.ts';
import { createDialer, dialerSettingsFrom } from '../tunnel/create-dialer.ts';
import type { Dialer } from '../tunnel/dialer.ts';
import type { TunnelOptions } from '../tunnel/open-tunnel.ts';
import { compileTargetTemplate } from '../tunnel/target-host.ts';
import { statusResponse } from '../upgrade/response-head.ts';
import { createUpgradeHandler, type UpgradeHandler } from '../upgrade/upgrade-handler.ts';
import { asClientResponse } from '../upstream/forward.ts';
import { TunnelPools, poolLimitsFrom } from '../upstream/tunnel-pool.ts';
import { createAdmission } from './admission.ts';
import { CancelBudget } from './cancel-budget.ts';
import { DrainState } from './drain.ts';
import { ExposedServices } from './exposed-services.ts';
import { createProxyHandler, sendStatus } from './proxy-handler.ts';

export interface UserServer {
  app: FastifyInstance<Http2SecureServer>;
  metrics: Metrics;
  /** Per-cluster state behind the health port's /clusters and page; undefined with --cluster-view=false. */
  clusters: ClusterView | undefined;
  pools: TunnelPools;
  upgrades: UpgradeHandler;
  tls: TlsReloader;
  /** The service allowlist (`--exposed-services-file`), reloaded when the file changes. */
  exposedServices: ExposedServices;
  drain: DrainState;
  /** Listening with its certificates loaded. */
  ready(): boolean;
  listen(): Promise<AddressInfo>;
  /**
   * Graceful stop: readiness already failing, keep accepting for `delayMs`, then stop accepting, wait up
   * to `graceMs` for short requests, end long streams cleanly and close everything.
   */
  shutdown(delayMs: number, graceMs: number): Promise<void>;
  close(): Promise<void>;
}

/** How long closing connections may take to flush their last bytes before they are destroyed. */
const CLOSE_LINGER_MS = 2_000;

/** Node's answer to a request whose headers took too long (ERR_HTTP_REQUEST_TIMEOUT). */
const REQUEST_TIMEOUT_RESPONSE = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

/** How often HTTP/1.1 connections are checked against the headers timeout (at most). */
const HEADERS_CHECK_INTERVAL_MS = 1_000;

/** Connections dropped at --max-connections are logged at most this often. */
const DROP_LOG_INTERVAL_MS = 10_000;

/** The methods the proxy route serves; others get a 405 Status. */
const PROXIED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
const PROXIED = new Set<string>(PROXIED_METHODS);

/**
 * Node's headersTimeout only runs once a request's first byte has arrived: an HTTP/1.1 connection that
 * sends nothing after its handshake would be held forever. As Go's ReadHeaderTimeout does, it gets the
 * same time as a request's headers; once bytes came, the headers timeout and then keepAliveTimeout apply.
 */
function closeIfSilent(socket: Socket, ms: number): void {
  const readAtHandshake = socket.bytesRead;
  const timer = setTimeout(() => {
    if (socket.bytesRead === readAtHandshake) socket.destroy();
  }, ms).unref();
  socket.once('close', () => clearTimeout(timer));
}

/** GOAWAY: streams already open finish, the client sends new ones on a new connection. */
function goAway(session: ServerHttp2Session): void {
  if (!session.closed && !session.destroyed) session.close();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Wires the front (an HTTPS server with HTTP/2 and HTTP/1.1, whose life Fastify manages), the proxy handler
 * and the tunnel pools. Proxied methods go from the server straight to the handler; what Fastify still
 * routes (every path, once closing) goes to the same handler, which takes the response over (hijack): the
 * handler streams, and Fastify must neither parse bodies nor send replies of its own.
 */
export interface UserServerDeps {
  metrics?: Metrics;
  /** How tunnels are opened through ANP; by default the one `--proxy-mode` names. Tests may hand in their own. */
  dialer?: Dialer;
}

export function createUserServer(config: Config, logger: Logger, deps: UserServerDeps = {}): UserServer {
  const metrics = deps.metrics ?? new Metrics({ clusterLabelLimit: config.metrics.clusterLabelLimit });
  const tlsFiles = new TlsReloader({ config, logger, metrics, intervalMs: config.tls.reloadIntervalMs });
  const drain = new DrainState();
  const dialer = deps.dialer ?? createDialer({ ...dialerSettingsFrom(config, tlsFiles.proxyContext), onConnections: (open) => metrics.proxyConnections(open) });
  const tunnel: TunnelOptions = {
    dialer,
    serviceProxyTls: tlsFiles.serviceProxyContext,
    tlsHandshakeTimeoutMs: config.timeouts.tlsHandshakeMs,
    onDial: (r, t) => {
      metrics.dialed(r);
      clusters?.dialed(t, r);
    },
    onTunnelOpen: (s, t) => {
      metrics.tunnelOpened();
      clusters?.tunnelOpened(t, s);
    },
    onTunnelClose: (s, t) => {
      metrics.tunnelClosed();
      clusters?.tunnelClosed(t, s);
    },
  };
  const pools = new TunnelPools(tunnel, poolLimitsFrom(config));
  const targetFor = compileTargetTemplate(config.targetTemplate);
  // Declared after the tunnel callbacks that use it: they first run on a dial, once the server serves.
  const clusters = config.clusterView ? new ClusterView({ maxClusters: config.limits.maxClusters, hostOf: (c) => targetFor(c).host }) : undefined;
  if (clusters !== undefined) metrics.countClustersWithoutAgent(() => clusters.withoutAgent());

  const serving = tlsFiles.servingMaterial;
  // Node reports each further parse failure of a broken connection again; answer it once.
  const answered = new WeakSet<Socket>();
  const nextId = requestIdGenerator();
  // A sane X-Request-Id from the client is kept, so its logs and ours correlate; it is sent back either way.
  const requestIdFor = (req: Pick<IncomingMessage, 'headers'>): string => saneRequestId(req.headers['x-request-id']) ?? nextId();
  const h2 = config.server.http2;
  const http1Timeouts = {
    headersTimeout: config.server.requestHeadersTimeoutMs,
    // Never time a whole request: watches, `logs -f` and long uploads stream for as long as they need.
    requestTimeout: 0,
    // How often Node looks for connections over headersTimeout (its default, 30 s, let a slowloris client
    // stay up to 90 s with the 60 s default).
    connectionsCheckingInterval: Math.min(HEADERS_CHECK_INTERVAL_MS, config.server.requestHeadersTimeoutMs),
    // Fastify's keepAliveTimeout does not reach HTTP/1.1 connections of an HTTP/2 server: Node's 5 s would
    // apply, and clients would reconnect (a TLS handshake) after every short pause.
    keepAliveTimeout: 75_000,
  };
  const https = {
    allowHTTP1: true,
    cert: serving.cert,
    key: serving.key,
    minVersion: config.server.minVersion,
    // A client that stalls its TLS handshake is bounded as one that stalls its headers (Node: 120 s).
    handshakeTimeout: config.server.requestHeadersTimeoutMs,
    // HTTP/1.1 connections (maxHeaderSize) and HTTP/2 (SETTINGS_MAX_HEADER_LIST_SIZE) get the same bound.
    maxHeaderSize: config.server.maxHeaderBytes,
    // Node advertises 2^32-1 concurrent streams unless told otherwise; streams over the limit are refused.
    settings: { maxHeaderListSize: config.server.maxHeaderBytes, maxConcurrentStreams: h2.maxConcurrentStreams },
    // Rapid reset (CVE-2023-44487): nghttp2's RST_STREAM token bucket; Node applies it only when both are set.
    streamResetBurst: h2.streamResetBurst,
    streamResetRate: h2.streamResetRate,
    maxSessionInvalidFrames: h2.maxSessionInvalidFrames,
    maxSessionRejectedStreams: h2.maxSessionRejectedStreams,
    maxHeaderListPairs: h2.maxHeaderListPairs,
    maxSessionMemory: h2.maxSessionMemory,
    unknownProtocolTimeout: config.server.unknownProtocolTimeoutMs,
    // HTTP/1.1 on this server: Fastify applies none of its HTTP/1 timeouts when `http2` is on, and Node's
    // own would cut uploads after 300 s (requestTimeout) and slow headers only after 60-90 s. Node reads
    // these at construction (storeHTTPOptions); they are set on the server again below.
    ...http1Timeouts,
  };
  // Set once Fastify's close() begins: from then on, Fastify answers 503 (return503OnClosing).
  let closing = false;
  const options = {
    http2: true,
    https,
    /**
     * The server is made here so that proxied requests go straight to the proxy handler: Fastify's work
     * per request on a route that hijacks anyway (request and reply objects, router, hooks, the child
     * logger) was 5 % of the CPU at 1 KiB @64 (bench/README.md, finding 12). Fastify still owns the
     * server's life (listen, close) and answers what is not proxied: other methods, and every request once
     * closing.
     */
    serverFactory: (fastifyHandler: (req: Http2ServerRequest, res: Http2ServerResponse) => void) => {
      const server = http2.createSecureServer(https, (req, res) => {
        if (closing || !PROXIED.has(req.method)) {
          fastifyHandler(req, res);
          return;
        }
        handle(req, asClientResponse(res), requestIdFor(req)).catch((err: unknown) => {
          logger.error({ err }, 'proxy handler failed');
          res.destroy();
        });
      });
      // An idle connection gets GOAWAY (--http2-idle-timeout; Fastify's own server did this at 72 s).
      server.on('session', (session) => session.setTimeout(h2.idleTimeoutMs, () => session.close()));
      return server;
    },
    loggerInstance: logger,
    // The proxy handler writes one access line per request itself, with the fields operators need.
    logController: new LogController({ disableRequestLogging: true }),
    // Fastify would make a child logger per request (bindings run through every redaction path, ~12 us);
    // nothing logs through request.log: the handler's own lines carry the request id.
    childLoggerFactory: (parent: Logger) => parent,
    genReqId: requestIdFor,
    // Long watches and `logs -f` must not be cut by the front; slow-header clients are bounded by
    // headersTimeout (--request-headers-timeout) instead.
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
      if (answered.has(socket)) return;
      answered.add(socket);
      if (!socket.writable) {
        socket.destroy();
        return;
      }
      // A parse error after a request was answered (a refused request whose body then fails to parse):
      // a second response would follow the first on the wire. Node's own handler makes the same check.
      if ((socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true) {
        socket.destroySoon();
        setTimeout(() => socket.destroy(), 2_000).unref();
        return;
      }
      if ((err as { code?: string }).code === 'ERR_HTTP_REQUEST_TIMEOUT') {
        // Headers not complete within --request-headers-timeout (slowloris): answer as Node does and hang
        // up at once; a client that sent no complete header block in that time has nothing left to send.
        socket.end(REQUEST_TIMEOUT_RESPONSE);
        socket.destroySoon();
        setTimeout(() => socket.destroy(), 1_000).unref();
        return;
      }
      const error = (err as { code?: string }).code === 'HPE_HEADER_OVERFLOW'
        ? new ProxyError('HEADERS_TOO_LARGE', `request headers exceed ${config.server.maxHeaderBytes} bytes`)
        : new ProxyError('MALFORMED_REQUEST', 'malformed HTTP request');
      // Written without end(): closing while the client is still sending makes the kernel reset the
      // connection, and the reset overtakes the answer. Connection: close lets the client hang up first.
      socket.write(statusResponse(error));
      setTimeout(() => socket.destroy(), 2_000).unref();
    },
  };
  const app = Fastify(options as unknown as FastifyHttp2SecureOptions<Http2SecureServer>) as unknown as FastifyInstance<Http2SecureServer>;
  // Unlike http.Server, the HTTP/2 secure server leaves Nagle on. A response goes out as a header write
  // then body writes; with Nagle the body waits for the ACK of the headers, which a client may delay by
  // 40 ms: p50 was 44 ms and 86 req/s at 4 connections (bench/README.md).
  app.server.on('connection', (socket: Socket) => socket.setNoDelay(true));
  // Set again on the server itself: Node versions differ in which options of Http2SecureServer reach its
  // HTTP/1.1 side, and the properties are what Node reads (connectionsCheckingInterval when listening).
  Object.assign(app.server, http1Timeouts);
  // Every TLS connection counts, HTTP/2 and HTTP/1.1 alike (upgraded ones too); more are closed on accept.
  app.server.maxConnections = config.server.maxConnections;
  let dropped = 0;
  let dropLogged = 0;
  app.server.on('drop', () => {
    dropped++;
    const now = Date.now();
    if (now - dropLogged < DROP_LOG_INTERVAL_MS) return;
    dropLogged = now;
    logger.warn({ maxConnections: config.server.maxConnections, droppedSinceStart: dropped }, 'client connection closed on accept: --max-connections reached');
  });

  // Bodies are streamed to the managed cluster untouched: no parser may read them.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, _payload, done) => done(null));

  const exposedServices = new ExposedServices({ file: config.exposedServicesFile, logger, intervalMs: config.tls.reloadIntervalMs });
  const admission = createAdmission({
    metrics,
    logger,
    accessLog: config.log.access,
    maxRequestsPerCluster: config.limits.maxRequestsPerCluster,
    maxUpgradesPerCluster: config.limits.maxUpgradesPerCluster,
    impersonation: config.impersonation,
    allowlist: () => exposedServices.allowlist,
  });
  const handle = createProxyHandler({
    pools,
    targetFor,
    metrics,
    clusters,
    logger,
    accessLog: config.log.access,
    admission,
    clientStallTimeoutMs: config.timeouts.clientStallMs,
    cancelledDrain: { maxBytes: config.limits.cancelledDrainBytes, timeoutMs: config.timeouts.cancelledDrainMs },
    cancelBudget: new CancelBudget(config.limits.cancelledTunnelsPerConnection, (session) =>
      logger.warn({ remoteAddress: session.socket?.remoteAddress, budget: config.limits.cancelledTunnelsPerConnection }, 'client connection sent away: its cancelled requests cost too many tunnels'),
    ),
    drain,
  });
  // The route takes every path, so only the other methods (TRACE, PROPFIND, ...) get here: Fastify would
  // answer its own 404 JSON; clients expect a Status, and the kube-apiserver answers these 405.
  app.setNotFoundHandler((request, reply) => {
    reply.hijack();
    metrics.requestRejected(request.method, 405);
    sendStatus(asClientResponse(reply.raw), new ProxyError('METHOD_NOT_ALLOWED', `method ${JSON.stringify(request.method.slice(0, 32))} is not supported`), undefined, request.id);
  });
  // The proxy route for the requests Fastify still sees (once closing, they get its 503 first).
  app.route({
    method: [...PROXIED_METHODS],
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
    clusters,
    logger,
    accessLog: config.log.access,
    admission,
    responseHeadersTimeoutMs: config.timeouts.responseHeadersMs,
    clientStallTimeoutMs: config.timeouts.clientStallMs,
    idleTimeoutMs: config.timeouts.upgradeIdleMs,
  });
  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => upgrades.handle(req, socket, head, requestIdFor(req)));

  // Open connections, to close what is left once the drain is over.
  const sockets = new Set<Socket>();
  const sessions = new Set<ServerHttp2Session>();
  app.server.on('secureConnection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    if ((socket as TLSSocket).alpnProtocol !== 'h2') closeIfSilent(socket, config.server.requestHeadersTimeoutMs);
  });
  app.server.on('session', (session: ServerHttp2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  const goAwayAll = (): void => {
    for (const s of sessions) goAway(s);
  };

  let listening = false;
  let closed = false;
  /**
   * Ends what is still open: long streams end complete, HTTP/2 sessions get GOAWAY and close once their
   * streams are done. HTTP/1.1 connections close themselves after their last response (every response
   * begun while draining says Connection: close, and the connections of watches ended here are ended
   * after their last chunk); closing them from outside right after a response ended can drop its last
   * bytes. Connections idle when the listener closed were closed by Node then; a keep-alive connection
   * whose response began before the drain and ended after that is destroyed after CLOSE_LINGER_MS.
   */
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    tlsFiles.stop();
    exposedServices.stop();
    drain.stopStreams();
    goAwayAll();
    // Upgraded sessions end cleanly (those still waiting for their 101 get a 503).
    const upgradesClosed = upgrades.closeAll();
    // Wait first: Fastify's close() makes Node close every HTTP/1.1 connection whose response has ended,
    // even when its last bytes are still queued.
    await new Promise<void>((resolve) => {
      const check = setInterval(() => {
        if (sockets.size === 0) finish();
      }, 20);
      const force = setTimeout(() => {
        for (const s of sockets) s.destroy();
        finish();
      }, CLOSE_LINGER_MS);
      const finish = (): void => {
        clearInterval(check);
        clearTimeout(force);
        resolve();
      };
      if (sockets.size === 0) finish();
    });
    closing = true;
    await Promise.all([app.close(), upgradesClosed]);
    await pools.close();
    dialer.close();
  };

  return {
    app,
    metrics,
    clusters,
    pools,
    upgrades,
    tls: tlsFiles,
    exposedServices,
    drain,
    ready: () => listening && !drain.draining,
    async listen() {
      await app.listen({ host: config.server.address, port: config.server.port });
      listening = true;
      exposedServices.start();
      tlsFiles.start((m) => app.server.setSecureContext({ cert: m.cert, key: m.key, minVersion: config.server.minVersion }));
      return app.server.address() as AddressInfo;
    },
    async shutdown(delayMs, graceMs) {
      drain.draining = true;
      goAwayAll();
      logger.info({ delayMs, graceMs }, 'draining: readiness fails; still accepting until the delay is over');
      await sleep(delayMs);
      // Stop accepting; open connections stay until their requests are done.
      app.server.close();
      goAwayAll();
      const done = await drain.whenShortRequestsDone(graceMs);
      logger.info({ shortRequestsLeft: drain.shortRequestsInFlight, upgradedSessions: upgrades.open, inTime: done }, 'ending long streams and upgraded sessions, closing connections');
      drain.stopStreams();
      await close();
      logger.info('stopped');
    },
    close,
  };
}
