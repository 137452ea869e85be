import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Dispatcher } from 'undici';
import { ProxyError, isProxyError } from '../errors/proxy-error.ts';
import { buildResponseHeaders, type UpstreamHeaders } from '../routing/forward-headers.ts';

export type ClientRequest = IncomingMessage | Http2ServerRequest;

/** What the proxy needs of an HTTP/1.1 ServerResponse or an HTTP/2 compatibility response. */
export interface ClientResponse {
  readonly headersSent: boolean;
  readonly destroyed: boolean;
  writeHead(statusCode: number, headers: Record<string, string> | string[]): unknown;
  write(chunk: Buffer): boolean;
  end(body?: string): unknown;
  destroy(err?: Error): unknown;
  on(event: 'close' | 'drain', listener: () => void): unknown;
  once(event: 'close' | 'drain' | 'finish', listener: () => void): unknown;
  removeListener(event: 'close' | 'drain', listener: () => void): unknown;
  /** HTTP/1.1 only: sends the header block before the first body chunk. */
  flushHeaders?(): void;
}

export function asClientResponse(res: ServerResponse | Http2ServerResponse): ClientResponse {
  return res as unknown as ClientResponse;
}

export interface ForwardRequest {
  dispatcher: Dispatcher;
  /** `https://<target host>:<port>`: undici keys its tunnel pools by this. */
  origin: string;
  /**
   * The service-proxy's name, the same for every request to the cluster. undici otherwise derives a
   * server name from each request's Host header, which we relay as the client sent it, and closes a
   * pooled tunnel whenever the next request's differs ("servername changed").
   */
  servername: string;
  method: string;
  path: string;
  headers: string[];
  /** The client's body stream, or null when the request has none. */
  body: ClientRequest | null;
  /** Longest time the client may leave the response paused (not draining) before it is cut off; 0 disables. */
  clientStallTimeoutMs: number;
  /** Extra response headers (lower-case name, value pairs), e.g. the request id; they replace upstream headers of the same name. */
  responseHeaders?: string[];
  /** A watch or `logs -f`: at shutdown it ends as a complete response instead of being cut off. */
  longRunning?: boolean;
  /** Aborted when the server stops for good: long streams end cleanly, anything else still running is cut off. */
  shutdown?: AbortSignal;
}

export interface ForwardResult {
  /** Status sent to the client by the upstream, when response headers were relayed. */
  statusCode?: number;
  /** Response body bytes relayed. */
  bytes: number;
  /** Seconds from dispatch to the upstream's response headers. */
  firstByteSeconds?: number;
  /** Failure before response headers: the caller answers with a Status. */
  errorBeforeHeaders?: ProxyError;
  /** Failure after response headers: the client's connection or stream was aborted. */
  errorAfterHeaders?: Error;
  /** The client went away before the response was complete. */
  clientGone?: boolean;
  /** A long stream the server ended cleanly because it is shutting down. */
  endedByShutdown?: boolean;
}

/**
 * Sends one request through a pooled tunnel and relays the response as it arrives, chunk by chunk,
 * pausing the upstream (an HTTP/1.1 tunnel, or just the HTTP/2 stream) while the client is not draining.
 * Never buffers a body. A failure after the headers went out destroys the client's response (connection
 * for HTTP/1.1, stream for HTTP/2) so that a cut-off body can never look complete.
 */
export function forward(req: ForwardRequest, res: ClientResponse): Promise<ForwardResult> {
  return new Promise((resolve) => {
    const handler = new RelayHandler(res, req, resolve);
    if (req.shutdown?.aborted) {
      handler.failBeforeStart(shuttingDown());
      return;
    }
    try {
      // `servername` is read by undici's Request (core/request.js) but missing from its typings.
      const options: Dispatcher.DispatchOptions & { servername: string } = {
        origin: req.origin,
        servername: req.servername,
        path: req.path,
        method: req.method,
        headers: req.headers,
        body: req.body,
      };
      req.dispatcher.dispatch(options, handler);
    } catch (err) {
      handler.failBeforeStart(err);
    }
  });
}

class RelayHandler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private readonly started = performance.now();
  private result: ForwardResult = { bytes: 0 };
  private done = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private readonly onClientClose = (): void => {
    if (this.done) return;
    this.result.clientGone = true;
    // Aborting cancels the request upstream: undici destroys an HTTP/1.1 tunnel, or resets the HTTP/2
    // stream and keeps the tunnel for the other streams on it.
    this.controller?.abort(new Error('client closed the connection'));
    this.finish();
  };
  private readonly onDrain = (): void => {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    this.controller?.resume();
  };

  private readonly onShutdown = (): void => {
    if (this.done) return;
    // finish() first: aborting the dispatch reports an error back synchronously, which must find the
    // relay already done.
    if (!this.res.headersSent) {
      const err = shuttingDown();
      this.result.errorBeforeHeaders = err;
      this.finish();
      this.controller?.abort(err);
    } else if (this.longRunning) {
      // A watch that ends complete (h1: the last chunk; h2: END_STREAM) makes client-go re-list and
      // re-watch against another replica without reporting an error.
      this.result.endedByShutdown = true;
      this.finish();
      this.controller?.abort(new Error('the user-server is shutting down'));
      // HTTP/1.1: the connection is then closed after the last chunk is out (gracefully, never before it);
      // its client would otherwise keep it idle until the server's final clean-up destroys it.
      const socket = 'shouldKeepAlive' in this.res ? (this.res as { socket?: { end(): void } | null }).socket : undefined;
      if (socket) this.res.once('finish', () => socket.end());
      this.res.end();
    } else {
      const err = new Error('the user-server shut down before the response was complete');
      this.result.errorAfterHeaders = err;
      this.finish();
      this.controller?.abort(err);
      this.res.destroy(err);
    }
  };

  private readonly res: ClientResponse;
  private readonly stallTimeoutMs: number;
  private readonly longRunning: boolean;
  private readonly extraHeaders: string[] | undefined;
  private readonly shutdown: AbortSignal | undefined;
  private readonly resolve: (r: ForwardResult) => void;

  constructor(res: ClientResponse, req: ForwardRequest, resolve: (r: ForwardResult) => void) {
    this.res = res;
    this.stallTimeoutMs = req.clientStallTimeoutMs;
    this.longRunning = req.longRunning === true;
    this.extraHeaders = req.responseHeaders;
    this.shutdown = req.shutdown;
    this.resolve = resolve;
    res.on('close', this.onClientClose);
    this.shutdown?.addEventListener('abort', this.onShutdown, { once: true });
  }

  failBeforeStart(err: unknown): void {
    this.result.errorBeforeHeaders = toProxyError(err);
    this.finish();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.done) controller.abort(new Error('client closed the connection'));
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    this.result.statusCode = statusCode;
    this.result.firstByteSeconds = (performance.now() - this.started) / 1000;
    const raw = (controller as unknown as { rawHeaders: UpstreamHeaders | null }).rawHeaders ?? [];
    const res = this.res;
    res.writeHead(statusCode, withExtraHeaders(buildResponseHeaders(raw), this.extraHeaders));
    // Headers of a watch or `logs -f` (streamed, so without Content-Length) must reach the client before
    // the first event, which may take minutes. A sized body goes out with its headers in one write: a
    // separate header write costs a TLS record and a syscall per request (bench/README.md).
    if (headers['content-length'] === undefined) res.flushHeaders?.();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.result.bytes += chunk.length;
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', this.onDrain);
      if (this.stallTimeoutMs > 0 && this.stallTimer === undefined) {
        this.stallTimer = setTimeout(() => this.onStalled(), this.stallTimeoutMs);
      }
    }
  }

  onResponseEnd(): void {
    this.res.end();
    this.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.done) return;
    if (this.res.headersSent) {
      this.result.errorAfterHeaders = err;
      this.res.destroy(err);
    } else {
      this.result.errorBeforeHeaders = toProxyError(err);
    }
    this.finish();
  }

  private onStalled(): void {
    // A paused HTTP/1.1 tunnel socket stops ANP's per-agent dispatcher for every tunnel of that agent
    // (anp.md section 1.4); a paused HTTP/2 stream holds its buffers and a watch upstream. Either way a
    // client that stops reading must not hold them for long.
    const err = new Error(`client did not read the response for ${this.stallTimeoutMs} ms`);
    this.result.errorAfterHeaders = err;
    this.controller?.abort(err);
    this.res.destroy(err);
    this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.stallTimer);
    this.res.removeListener('close', this.onClientClose);
    this.res.removeListener('drain', this.onDrain);
    this.shutdown?.removeEventListener('abort', this.onShutdown);
    this.resolve(this.result);
  }
}

function shuttingDown(): ProxyError {
  return new ProxyError('SHUTTING_DOWN', 'the user-server is shutting down; retry', { retryAfterSeconds: 1 });
}

/** Appends `extra` (lower-case names) in place of any upstream header of the same name. */
function withExtraHeaders(headers: string[], extra: string[] | undefined): string[] {
  if (extra === undefined) return headers;
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const lower = headers[i]!.toLowerCase();
    let replaced = false;
    for (let j = 0; j < extra.length && !replaced; j += 2) replaced = extra[j] === lower;
    if (!replaced) out.push(headers[i]!, headers[i + 1]!);
  }
  out.push(...extra);
  return out;
}

/** Maps what undici reports before response headers to the proxy's own error codes. */
export function toProxyError(err: unknown): ProxyError {
  if (isProxyError(err)) return err;
  const e = err as { code?: string; message?: string };
  switch (e.code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new ProxyError('UPSTREAM_HEADERS_TIMEOUT', 'the managed cluster did not send response headers in time', { cause: err });
    case 'UND_ERR_MAX_ORIGINS_REACHED':
      return new ProxyError('CAPACITY_EXCEEDED', 'too many clusters have open tunnels on this user-server; retry shortly', { cause: err, retryAfterSeconds: 1 });
    case 'UND_ERR_SOCKET':
    case 'ECONNRESET':
    case 'EPIPE':
      return new ProxyError('UPSTREAM_FAILED', `the tunnel closed before the managed cluster answered: ${e.message ?? e.code}`, { cause: err });
    case 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH':
      return new ProxyError('BAD_REQUEST_BODY', `the request body did not match its Content-Length: ${e.message}`, { cause: err });
    default:
      return new ProxyError('UPSTREAM_FAILED', `forwarding to the managed cluster failed: ${e.message ?? String(err)}`, { cause: err });
  }
}
