import fs from 'node:fs';
import net from 'node:net';
import { pino, type Logger, type DestinationStream } from 'pino';

/**
 * Paths pino censors wherever they appear in a log object. Tokens travel in Authorization headers, cookies,
 * headers such as X-Remote-Token and query strings such as `?access_token=`; the proxy logs paths without
 * their query and never logs headers on purpose, and this list makes sure an object carrying a request
 * (or its headers) cannot leak them either.
 */
export const REDACT_PATHS = [
  'authorization',
  'cookie',
  'token',
  'headers',
  'rawHeaders',
  '*.authorization',
  '*.Authorization',
  '*.cookie',
  '*.Cookie',
  '*.token',
  '*.headers',
  '*.rawHeaders',
  '*.*.authorization',
  '*.*.cookie',
  '*.*.headers',
  'err.config',
];

/** Query parameters and credentials in free text (error messages, stacks, URLs) that must never be logged. */
const SECRET_QUERY = /([?&;](?:access_token|id_token|refresh_token|token|password|passwd|secret|apikey|api_key|key|sig|signature|code)=)[^&#\s"']*/gi;
const SECRET_SCHEME = /\b(Bearer|Basic|Negotiate|Digest)\s+[A-Za-z0-9._~+/=,:-]+/g;
const URL_USERINFO = /(\b[a-z][a-z0-9+.-]*:\/\/)[^/@\s"']+@/gi;

/** Cheap pre-check: log messages are mostly fixed words, and this runs for every line. */
const MAYBE_SECRET = /[=@]|Bearer|Basic|Negotiate|Digest/;

/** Removes credentials from text that may quote a URL or a header (error messages from dependencies). */
export function scrubSecrets(text: string): string {
  if (!MAYBE_SECRET.test(text)) return text;
  return text.replace(SECRET_QUERY, '$1[REDACTED]').replace(SECRET_SCHEME, '$1 [REDACTED]').replace(URL_USERINFO, '$1[REDACTED]@');
}

interface SerializedError {
  type: string;
  message: string;
  code?: string;
  stack?: string;
  cause?: SerializedError;
}

/**
 * Errors keep only their type, message, code, stack and cause, scrubbed: dependency errors may carry
 * the request (undici keeps headers on some) or quote a URL with its query.
 */
function serializeError(err: unknown, depth = 0): SerializedError | unknown {
  if (!(err instanceof Error)) return typeof err === 'string' ? scrubSecrets(err) : err;
  const out: SerializedError = { type: err.name, message: scrubSecrets(err.message) };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') out.code = code;
  if (err.stack !== undefined) out.stack = scrubSecrets(err.stack);
  if (err.cause !== undefined && depth < 4) out.cause = serializeError(err.cause, depth + 1) as SerializedError;
  return out;
}

/** A request as Fastify or Node would log it: method and path only, never headers or the query. */
function serializeRequest(req: { method?: string; url?: string; id?: unknown }): Record<string, unknown> {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return { id: req.id, method: req.method, path: q === -1 ? url : url.slice(0, q) };
}

/**
 * Lines are written to stdout in batches of about this size (or at least every second). At 4 KiB, one
 * write per ten access lines was 3 % of the CPU at 1 KiB @64 (bench/README.md, finding 11).
 */
const LOG_BATCH_BYTES = 16 * 1024;

/** The parts of pino's SonicBoom destination used here, in its 'buffer' content mode. */
interface SonicBoom {
  write(data: Buffer): boolean;
  flush(cb?: (err?: Error) => void): void;
  destroy(): void;
  on(event: 'drop', listener: (data: Buffer) => void): unknown;
}

/** Kept for the life of the process: it owns the non-blocking mode of fd 1 (see stdoutNonBlocking). */
let stdoutHandle: net.Socket | undefined;

/**
 * Puts stdout in non-blocking mode when it is a pipe or a socket, as a container's stdout is. Written in
 * blocking mode, a stalled collector parks one of libuv's thread-pool threads in write() for as long as it
 * stalls, and the process then cannot even exit: exit() joins that pool. Non-blocking, SonicBoom gets
 * EAGAIN and retries on a timer. libuv sets the mode when it opens the descriptor as a pipe; nothing
 * writes through this handle.
 */
function stdoutNonBlocking(): void {
  if (stdoutHandle !== undefined) return;
  const stat = fs.fstatSync(1);
  if (!stat.isFIFO() && !stat.isSocket()) return;
  stdoutHandle = new net.Socket({ fd: 1, readable: false, writable: false });
  stdoutHandle.unref();
}

/** Where the process logs to, and how it lets go of it at exit. */
export interface StdoutLog {
  stream: DestinationStream;
  /**
   * Writes out what is still buffered, for at most `timeoutMs`; then drops it. The process must then
   * exit with process.exit(): a write blocked on a stalled stdout would keep it alive.
   */
  close(timeoutMs: number): Promise<void>;
}

/**
 * stdout behind a bounded, batched buffer. pino's default destination buffers without limit while stdout
 * does not drain (a stalled log collector), so memory would grow with every request; here output beyond
 * `maxBytes` is dropped and reported through `onDrop` instead, and requests never wait for the log. Lines
 * go out in batches of 4 KiB or at least every second, so a quiet server's lines still show up promptly.
 * pino's own exit hook would wait for stdout without limit, so a stalled collector would keep a
 * terminated pod alive; `close` gives up after its timeout instead.
 */
export function stdoutLog(maxBytes: number, onDrop: (lines: number) => void): StdoutLog {
  stdoutNonBlocking();
  const sonic = pino.destination({
    dest: 1,
    sync: false,
    // In its default (utf8) mode SonicBoom measures the whole pending batch with Buffer.byteLength on
    // every line; with Buffers it adds their lengths: 1.0 instead of 4.5 us per access line.
    contentMode: 'buffer',
    minLength: LOG_BATCH_BYTES,
    // SonicBoom needs its largest write above the batch; a pipe holds 64 KiB.
    maxWrite: LOG_BATCH_BYTES * 4,
    periodicFlush: 1000,
    // The buffer must hold a few batches, or every line beyond the first batch would be dropped.
    maxLength: Math.max(maxBytes, LOG_BATCH_BYTES * 4),
  }) as unknown as SonicBoom;
  sonic.on('drop', (data) => {
    let lines = 0;
    for (let i = data.indexOf('\n'); i !== -1; i = data.indexOf('\n', i + 1)) lines++;
    onDrop(Math.max(lines, 1));
  });
  return {
    stream: { write: (line: string) => sonic.write(Buffer.from(line)) },
    close: (timeoutMs) =>
      new Promise((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          // Destroyed, it is skipped by pino's exit hook, whose synchronous flush would block on a
          // stalled stdout (the flush callback also fires when a write is still pending).
          sonic.destroy();
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        sonic.flush(done);
      }),
  };
}

let timeSecond = -1;
let timePrefix = '';

/**
 * pino's isoTime, without building a Date and its ISO string for every line (1.6 % of the CPU at
 * 1 KiB @64): within one second only the milliseconds change.
 */
export function isoTimestamp(): string {
  const now = Date.now();
  const ms = now % 1000;
  const second = now - ms;
  if (second !== timeSecond) {
    timeSecond = second;
    // "2026-12-04T16:07:01." of "2026-12-04T16:07:01.000Z"
    timePrefix = `,"time":"${new Date(second).toISOString().slice(0, 20)}`;
  }
  return `${timePrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"`;
}

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'cluster-proxy-user-server' },
      redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
      serializers: { err: serializeError, error: serializeError, req: serializeRequest },
      hooks: {
        // Messages are free text: pino takes a bare error's message as the line's message, and dependencies
        // (Fastify, undici) log messages built from URLs.
        logMethod(args, method) {
          if (args[0] instanceof Error) {
            const [err, ...rest] = args as unknown[];
            const msg = typeof rest[0] === 'string' ? rest.shift() : (err as Error).message;
            return method.apply(this, [{ err }, scrubSecrets(msg as string), ...rest] as Parameters<typeof method>);
          }
          for (let i = 0; i < args.length; i++) {
            if (typeof args[i] === 'string') (args as unknown[])[i] = scrubSecrets(args[i] as string);
          }
          return method.apply(this, args);
        },
      },
      timestamp: isoTimestamp,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
