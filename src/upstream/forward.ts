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
  /** Stopped when the server stops for good: long streams end cleanly, anything else still running is cut off. */
  shutdown?: StopSignal;
  /**
   * A short request whose client goes away once it was sent is left to finish, its response read and
   * dropped within these bounds, so that its HTTP/1.1 tunnel goes back to the pool instead of being torn
   * down. Absent (or 0 bytes): the request is cancelled upstream at once.
   */
  cancelledDrain?: { maxBytes: number; timeoutMs: number };
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
  /** Sent a second time, on a fresh tunnel, because the first closed before any answer. */
  retried?: boolean;
  /** After the client went away, the response was read to its end and dropped, and the tunnel kept. */
  drainedAfterCancel?: boolean;
  /** The client went away from a short request in flight, and its HTTP/1.1 tunnel was torn down. */
  cancelCostTunnel?: boolean;
}

/**
 * Methods that are safe (RFC 9110 section 9.2.1): sent without a body, such a request may go out again
 * when its tunnel closed before any answer, since the first copy changed nothing even if it arrived.
 */
const REPLAYABLE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** undici's reports of a tunnel that closed under a request it had written or was writing. */
const TUNNEL_LOST = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/**
 * The server's shutdown as relays see it. Not an AbortSignal: adding and removing an EventTarget
 * listener for every request was 1.5 % of the CPU at 1 KiB @64 (bench/README.md, finding 12).
 */
export interface StopSignal {
  readonly stopped: boolean;
  /** Calls `listener` once when stopped, unless the entry is deleted first. */
  add(listener: () => void): StopEntry;
  delete(entry: StopEntry): void;
}

/** One registration on a StopSignal; opaque to the relay. */
export interface StopEntry {
  readonly listener: () => void;
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
    if (req.shutdown?.stopped === true) {
      handler.failBeforeStart(shuttingDown());
      return;
    }
    handler.dispatch();
  });
}

/**
 * The relay of one request. What it allocates lives as long as the request, which for an idle watch is
 * hours: listeners that may never be needed (body, drain) are made when they are, the request's dispatch
 * data is let go once the response started (it is only needed for a retry before that).
 */
class RelayHandler implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private readonly started = performance.now();
  private result: ForwardResult = { bytes: 0 };
  private done = false;
  private stallTimer: NodeJS.Timeout | undefined;
  /** Set once the client is gone and the rest of the response is read and dropped. */
  private discarding = false;
  private discardLeft = 0;
  private mayRetry: boolean;
  private readonly onClientClose: () => void;
  /** Whether the client's body arrived whole: HTTP/1.1 ends it only then, HTTP/2 also after a reset. */
  private bodyComplete = false;
  private readonly onBodyEnd: (() => void) | undefined;
  /**
   * An HTTP/2 client that resets its stream mid-upload: Node then ends the request body as if it were
   * whole, and undici would close a chunked upload with its last chunk, sending the cut-off body on as
   * complete. 'aborted' comes first, so the upstream request is cancelled before that can happen.
   */
  private readonly onBodyAborted: (() => void) | undefined;
  /** Made at the first write the client does not take at once. */
  private onDrain: (() => void) | undefined;
  private readonly stopEntry: StopEntry | undefined;

  /** Until the response starts: what a retry sends again. */
  private req: ForwardRequest | undefined;
  private readonly body: ClientRequest | null;
  private readonly cancelledDrain: ForwardRequest['cancelledDrain'];
  private readonly res: ClientResponse;
  private readonly stallTimeoutMs: number;
  private readonly longRunning: boolean;
  private readonly shutdown: StopSignal | undefined;
  private readonly resolve: (r: ForwardResult) => void;

  constructor(res: ClientResponse, req: ForwardRequest, resolve: (r: ForwardResult) => void) {
    this.req = req;
    this.res = res;
    this.body = req.body;
    this.cancelledDrain = req.cancelledDrain;
    this.mayRetry = req.body === null && REPLAYABLE_METHODS.has(req.method);
    if (req.body !== null) {
      this.onBodyEnd = this.bodyEnded.bind(this);
      this.onBodyAborted = this.bodyAborted.bind(this);
      req.body.once('end', this.onBodyEnd);
      req.body.once('aborted', this.onBodyAborted);
    }
    this.stallTimeoutMs = req.clientStallTimeoutMs;
    this.longRunning = req.longRunning === true;
    this.shutdown = req.shutdown;
    this.resolve = resolve;
    // Bound methods rather than arrow functions made here: in a handler stripped down to forward() alone,
    // those arrow functions were enough to get nearly every request's objects promoted to old space
    // (bench/README.md, finding 15).
    this.onClientClose = this.clientClosed.bind(this);
    res.on('close', this.onClientClose);
    this.stopEntry = this.shutdown?.add(this.shutDown.bind(this));
  }

  private bodyEnded(): void {
    this.bodyComplete = (this.body as { aborted?: boolean }).aborted !== true;
  }

  private bodyAborted(): void {
    if (this.done || this.discarding) return;
    this.result.clientGone = true;
    this.cancel('the client reset its request before the body was complete');
  }

  private clientClosed(): void {
    if (this.done || this.discarding) return;
    this.result.clientGone = true;
    if (this.startDiscarding()) return;
    this.cancel('client closed the connection');
  }

  private drained(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    this.controller?.resume();
  }

  /** The server is stopping for good. */
  private shutDown(): void {
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
  }

  failBeforeStart(err: unknown): void {
    this.result.errorBeforeHeaders = toProxyError(err);
    this.finish();
  }

  dispatch(): void {
    const req = this.req!;
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
      req.dispatcher.dispatch(options, this);
    } catch (err) {
      this.failBeforeStart(err);
    }
  }

  /**
   * Leaves a cancelled short request to finish upstream, so that undici keeps its HTTP/1.1 tunnel. Only
   * once the whole request is sent (a half-sent body can never complete) and within the drain bounds;
   * the request keeps its per-cluster slot meanwhile, so cancelling in a loop cannot pile work up.
   */
  private startDiscarding(): boolean {
    const drain = this.cancelledDrain;
    if (drain === undefined || drain.maxBytes === 0 || this.longRunning || this.controller === undefined) return false;
    if (this.body !== null && !this.bodyComplete) return false;
    this.discarding = true;
    this.discardLeft = drain.maxBytes;
    clearTimeout(this.stallTimer);
    if (this.onDrain !== undefined) this.res.removeListener('drain', this.onDrain);
    this.controller.resume();
    this.stallTimer = setTimeout(() => this.stopDiscarding(new Error(`the cancelled response did not end within ${drain.timeoutMs} ms`)), drain.timeoutMs);
    return true;
  }

  /**
   * Cancels the request upstream: undici destroys an HTTP/1.1 tunnel (short requests), or resets the
   * HTTP/2 stream and keeps the tunnel for the other streams on it.
   */
  private cancel(reason: string): void {
    if (this.controller !== undefined && !this.longRunning) this.result.cancelCostTunnel = true;
    this.controller?.abort(new Error(reason));
    this.finish();
  }

  private stopDiscarding(err: Error): void {
    this.result.cancelCostTunnel = true;
    this.controller?.abort(err);
    this.finish();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // The client left while the request waited for a tunnel. Aborting through the controller here would
    // make undici destroy the tunnel it was about to use; a throw makes it drop the request unsent and
    // keep the tunnel (client-h1 and client-h2 catch it and fail the request alone).
    if (this.done) throw new Error('client closed the connection before the request was sent');
    this.controller = controller;
  }

  /**
   * A pooled tunnel that closes just as a request goes out (the agent, ANP or the service-proxy dropped
   * it while idle) fails that request before any answer. A safe request without a body is sent once
   * more, on whichever tunnel the pool gives (a fresh one if none is left); anything else is answered
   * 502, since it may already have taken effect. Never after response headers: those went to the client.
   */
  private retryable(err: Error): boolean {
    if (!this.mayRetry || this.discarding || this.res.destroyed || this.shutdown?.stopped === true) return false;
    return TUNNEL_LOST.has((err as { code?: string }).code ?? '');
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    this.mayRetry = false;
    this.result.statusCode = statusCode;
    // No retry from here on: the request's headers, path and options need not live as long as the response.
    const extraHeaders = this.req?.responseHeaders;
    this.req = undefined;
    if (this.discarding) return;
    this.result.firstByteSeconds = (performance.now() - this.started) / 1000;
    const upstream = controller as unknown as { rawHeaders: UpstreamHeaders | null };
    const raw = upstream.rawHeaders ?? [];
    // undici keeps them on the controller for the request's whole life and never reads them again; for
    // an idle watch that is a header object (and its strings) held for hours.
    upstream.rawHeaders = null;
    const res = this.res;
    res.writeHead(statusCode, withExtraHeaders(buildResponseHeaders(raw), extraHeaders));
    // Headers of a watch or `logs -f` (streamed, so without Content-Length) must reach the client before
    // the first event, which may take minutes. A sized body goes out with its headers in one write: a
    // separate header write costs a TLS record and a syscall per request (bench/README.md).
    if (headers['content-length'] === undefined) res.flushHeaders?.();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.discarding) {
      this.discardLeft -= chunk.length;
      if (this.discardLeft < 0) this.stopDiscarding(new Error('the cancelled response is larger than --cancelled-drain-bytes'));
      return;
    }
    this.result.bytes += chunk.length;
    if (!this.res.write(chunk)) {
      controller.pause();
      this.onDrain ??= this.drained.bind(this);
      this.res.once('drain', this.onDrain);
      if (this.stallTimeoutMs > 0 && this.stallTimer === undefined) {
        this.stallTimer = setTimeout(() => this.onStalled(), this.stallTimeoutMs);
      }
    }
  }

  onResponseEnd(): void {
    if (this.discarding) this.result.drainedAfterCancel = true;
    else this.res.end();
    this.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.done) return;
    if (this.discarding) {
      this.finish();
      return;
    }
    if (!this.res.headersSent && this.retryable(err)) {
      this.mayRetry = false;
      this.result.retried = true;
      this.controller = undefined;
      // Not from inside undici's error callback: the failed request is still being torn down.
      setImmediate(() => {
        if (this.done) return;
        if (this.res.destroyed) this.finish();
        else this.dispatch();
      });
      return;
    }
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
    if (this.onDrain !== undefined) this.res.removeListener('drain', this.onDrain);
    if (this.body !== null) {
      this.body.removeListener('end', this.onBodyEnd!);
      this.body.removeListener('aborted', this.onBodyAborted!);
    }
    this.req = undefined;
    if (this.stopEntry !== undefined) this.shutdown!.delete(this.stopEntry);
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
