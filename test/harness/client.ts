import http2 from 'node:http2';
import https from 'node:https';

export interface ClientResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json<T = any>(): T;
  httpVersion: string;
}

/**
 * An HTTP/1.1 request with the path sent exactly as given (fetch would normalise it), through a fresh
 * connection so tests never share keep-alive state.
 */
export function h1(port: number, ca: Buffer, path: string, opts: { method?: string; headers?: Record<string, string | string[]>; body?: Buffer | string; onChunk?: (c: Buffer, atMs: number) => void; timeoutMs?: number } = {}): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = https.request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, ca, servername: 'localhost', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        opts.onChunk?.(c, performance.now() - started);
      });
      res.on('end', () => resolve(wrap(res.statusCode!, res.headers, Buffer.concat(chunks), res.httpVersion)));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.setTimeout(opts.timeoutMs ?? 30_000, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

export function h2(port: number, ca: Buffer, path: string, opts: { method?: string; headers?: Record<string, string>; onChunk?: (c: Buffer, atMs: number) => void } = {}): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: 'localhost' });
    session.on('error', reject);
    const stream = session.request({ ':method': opts.method ?? 'GET', ':path': path, ...opts.headers });
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    stream.on('response', (h) => (headers = h));
    stream.on('data', (c: Buffer) => {
      chunks.push(c);
      opts.onChunk?.(c, performance.now() - started);
    });
    stream.on('end', () => {
      session.close();
      resolve(wrap(Number(headers[':status']), headers as Record<string, string>, Buffer.concat(chunks), '2.0'));
    });
    stream.on('error', (err) => {
      session.destroy();
      reject(err);
    });
    stream.end();
  });
}

function wrap(status: number, headers: Record<string, string | string[] | undefined>, body: Buffer, httpVersion: string): ClientResponse {
  return { status, headers, body, text: body.toString('utf8'), json: () => JSON.parse(body.toString('utf8')), httpVersion };
}

export interface StreamedResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** Newline-terminated lines received. */
  lines: number;
  /** How the response ended: complete, or cut off by the proxy or the network (never seen as complete). */
  how: 'complete' | 'aborted';
}

/**
 * A streamed GET (a watch, `logs -f`) over its own HTTP/1.1 connection, read to its end. `onResponse`
 * sees the response first, e.g. to pause it. A failed connection resolves as status 0, aborted.
 */
export function streamedGet(port: number, ca: Buffer, path: string, onResponse?: (res: import('node:http').IncomingMessage) => void): Promise<StreamedResponse> {
  return new Promise((resolve) => {
    const req = https.request({ host: '127.0.0.1', port, path, ca, servername: 'localhost', agent: false }, (res) => {
      let lines = 0;
      const done = (how: StreamedResponse['how']): void => resolve({ status: res.statusCode!, headers: res.headers, lines, how });
      onResponse?.(res);
      res.on('data', (c: Buffer) => {
        for (const b of c) if (b === 0x0a) lines++;
      });
      res.on('end', () => done(res.complete ? 'complete' : 'aborted'));
      res.on('aborted', () => done('aborted'));
      res.on('error', () => done('aborted'));
    });
    req.on('error', () => resolve({ status: 0, headers: {}, lines: 0, how: 'aborted' }));
    req.end();
  });
}
