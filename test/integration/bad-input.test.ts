import type http from 'node:http';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createHealthServer, listenHealth } from '../../src/health/health-server.ts';
import { type Chain, type RunningUserServer, useChain } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';
import { H2, RawH2Connection, h2Frame as frame, hpackIndexed, hpackLiteral as lit, rawH2Request } from '../harness/raw-h2.ts';

/**
 * Bad input at the HTTPS front (issue 11; the table of every case, these and the older ones, is
 * bench/results/bad-input.md). Each case is aimed at cluster-a and must end in a Kubernetes Status (4xx),
 * an HTTP/2 stream or connection error, or a closed connection, with nothing dialled
 * (`tunnel_dials_total` scraped from the metrics port) and nothing reaching cluster-a's service-proxy,
 * while a well-behaved client of 1-cluster-b keeps getting 200s over HTTP/1.1 and HTTP/2 throughout.
 * Everything is refused at the front, so one tunnel mode is enough: the file runs once (vitest.config.ts).
 */

let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
useChain((c) => ({ chain, us, ca } = c));

let health: http.Server;
let metricsUrl: string;

/** All tunnel dials the user-server made, whatever their outcome, read as Prometheus would. */
async function dials(): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('cluster_proxy_user_server_tunnel_dials_total{')) n += Number(line.slice(line.lastIndexOf(' ') + 1));
  return n;
}

/** Requests 1-cluster-b over a fresh HTTP/1.1 connection and a fresh HTTP/2 session, two loops, until stopped. */
class WellBehavedClient {
  ok = 0;
  readonly failures: string[] = [];
  private stopped = false;
  private readonly loops: Promise<void>[] = [];
  private waiters: (() => void)[] = [];

  start(): void {
    for (const client of [h1, h2]) this.loops.push(this.loop(client));
  }

  private async loop(client: typeof h1 | typeof h2): Promise<void> {
    while (!this.stopped) {
      try {
        const r = await client(us.port, ca, '/1-cluster-b/api');
        if (r.status === 200) this.ok++;
        else this.failures.push(`${r.httpVersion}: ${r.status} ${r.text.slice(0, 200)}`);
      } catch (err) {
        this.failures.push(String(err));
      }
      for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Resolves once `n` more requests have succeeded; fails after 15 s (a stalled front). */
  async more(n: number): Promise<void> {
    const target = this.ok + n;
    const until = Date.now() + 15_000;
    while (this.ok < target) {
      if (Date.now() > until) throw new Error(`the well-behaved client stalled at ${this.ok} (wanted ${target}): ${this.failures.join('; ')}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 500);
      });
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }
}

const good = new WellBehavedClient();

beforeAll(async () => {
  health = createHealthServer({ ready: () => us.server.ready(), draining: () => false }, us.server.metrics.registry);
  metricsUrl = `http://127.0.0.1:${(await listenHealth(health, '127.0.0.1', 0)).port}/metrics`;
  good.start();
  // Its tunnels to 1-cluster-b are dialled now: from here on the loops reuse them.
  await good.more(6);
});

afterAll(async () => {
  await good.stop();
  health?.close();
  expect(good.failures).toEqual([]);
});

/**
 * Runs one case and checks that it harmed nothing: no dial, no request at cluster-a's service-proxy, and
 * the well-behaved client served during and after it.
 */
async function harmless<T>(run: () => Promise<T>): Promise<T> {
  const before = await dials();
  const received = chain.clusters.a.serviceProxy.received.length;
  const result = await run();
  await good.more(2);
  expect(await dials()).toBe(before);
  expect(chain.clusters.a.serviceProxy.received.length).toBe(received);
  expect(good.failures).toEqual([]);
  return result;
}

interface RawAnswer {
  status: number;
  head: string;
  body: string;
  /** The server closed the connection. */
  closed: boolean;
}

/**
 * Bytes written as they are on an HTTP/1.1 TLS connection; the answer is read until its Content-Length is
 * complete, or until the server closes when it said `Connection: close` or `untilClose` is set (at most 5 s;
 * a Status always has a Content-Length).
 */
function rawH1(bytes: string | Buffer, opts: { untilClose?: boolean } = {}): Promise<RawAnswer> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port: us.port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => socket.write(bytes));
    socket.on('error', () => {});
    let data = Buffer.alloc(0);
    let settled = false;
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const text = data.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      resolve({ status: Number(text.slice(9, 12)), head: end === -1 ? text : text.slice(0, end), body: end === -1 ? '' : text.slice(end + 4), closed });
      socket.destroy();
    };
    const timer = setTimeout(() => finish(false), 5_000);
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      const text = data.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const length = /\r\ncontent-length: (\d+)/i.exec(text.slice(0, end));
      // A complete answer on a connection the server said it will close: wait for the close itself.
      if (opts.untilClose === true || /\r\nconnection: close/i.test(text.slice(0, end))) return;
      if (end !== -1 && length !== null && data.length >= end + 4 + Number(length[1])) finish(false);
    });
    socket.once('close', () => finish(true));
  });
}

function expectStatus(body: string, code: number): Record<string, unknown> {
  const s = JSON.parse(body) as Record<string, unknown>;
  expect(s).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code });
  return s;
}

const H = 'Host: localhost\r\n';
const GET = (target: string, extra = ''): string => `GET ${target} HTTP/1.1\r\n${H}${extra}\r\n`;
const POST = (headers: string, body: string): string => `POST /cluster-a/api HTTP/1.1\r\n${H}${headers}\r\n${body}`;

describe('HTTP/1.1 framing and smuggling: a 400 Status, then the connection is closed', () => {
  test.each([
    ['Content-Length and Transfer-Encoding together', POST('Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n')],
    ['two Content-Length fields with different values', POST('Content-Length: 5\r\nContent-Length: 6\r\n', 'hello!')],
    ['two Content-Length fields with the same value', POST('Content-Length: 5\r\nContent-Length: 5\r\n', 'hello')],
    ['Content-Length "1 2"', POST('Content-Length: 1 2\r\n', 'hello')],
    ['negative Content-Length', POST('Content-Length: -1\r\n', 'hello')],
    ['Content-Length beyond 2^64', POST('Content-Length: 99999999999999999999999\r\n', 'hello')],
    ['Transfer-Encoding "chunked, identity" (chunked not last)', POST('Transfer-Encoding: chunked, identity\r\n', '0\r\n\r\n')],
    ['Transfer-Encoding chunked twice', POST('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n')],
    ['obs-fold (a header continued on the next line)', GET('/cluster-a/api', 'X-A: a\r\n folded\r\n')],
    ['bare LF line endings', 'GET /cluster-a/api HTTP/1.1\nHost: localhost\n\n'],
    ['a bare LF inside the header block', 'GET /cluster-a/api HTTP/1.1\r\nHost: localhost\nX-A: b\r\n\r\n'],
    ['a bare CR ("\\r\\n\\rX")', `GET /cluster-a/api HTTP/1.1\r\n${H}\r\rX`],
    ['a CR inside a header value', GET('/cluster-a/api', 'X-A: a\rb\r\n')],
    ['NUL in a header value', GET('/cluster-a/api', 'X-A: a\u0000b\r\n')],
    ['NUL in the request target', GET('/cluster-a/a\u0000pi')],
    ['raw UTF-8 in the request target', Buffer.concat([Buffer.from('GET /cl'), Buffer.from('ü', 'utf8'), Buffer.from(`ster/api HTTP/1.1\r\n${H}\r\n`)])],
    ['whitespace between a field name and its colon', 'GET /cluster-a/api HTTP/1.1\r\nHost : localhost\r\n\r\n'],
    ['a space inside a field name', GET('/cluster-a/api', 'X A: b\r\n')],
    ['a header line without a colon', GET('/cluster-a/api', 'garbage\r\n')],
    ['a method with a non-token character', `G<T /cluster-a/api HTTP/1.1\r\n${H}\r\n`],
    ['an unknown method (FOO)', `FOO /cluster-a/api HTTP/1.1\r\n${H}\r\n`],
    ['a lowercase method', `get /cluster-a/api HTTP/1.1\r\n${H}\r\n`],
    ['HTTP/1.2', `GET /cluster-a/api HTTP/1.2\r\n${H}\r\n`],
  ])('%s', async (_name, bytes) => {
    const r = await harmless(() => rawH1(bytes));
    expect(r.status).toBe(400);
    expect(r.head).toMatch(/\r\nconnection: close/i);
    expectStatus(r.body, 400);
    expect(r.closed).toBe(true);
  });

  test.each([
    ['Transfer-Encoding gzip', 'gzip', true],
    ['Transfer-Encoding xchunked', 'xchunked', true],
    // Framed by its last coding, so the connection may stay; Go's server would answer it 501.
    ['Transfer-Encoding "gzip, chunked"', 'gzip, chunked', false],
  ])('%s: 400 Status from admission (llhttp lets it reach the handler before failing its body)', async (_name, coding, closes) => {
    const r = await harmless(() => rawH1(POST(`Transfer-Encoding: ${coding}\r\n`, '0\r\n\r\n'), { untilClose: closes }));
    expect(r.status).toBe(400);
    expect(expectStatus(r.body, 400).message).toMatch(/Transfer-Encoding/);
    expect(r.closed).toBe(closes);
  });

  test.each([
    ['an invalid chunk size', 'zz\r\nhello\r\n0\r\n\r\n'],
    ['a chunk extension ended by a bare LF', '5;a\nhello\r\n0\r\n\r\n'],
  ])('a body with %s: a 400 Status and the connection closed (its headers were valid, so it may have been dialled)', async (_name, body) => {
    // Bodies are streamed, never buffered: the request was admitted on its headers before the body
    // failed to parse, and its upstream copy is aborted with the client connection. Dials are not checked.
    const r = await rawH1(POST('Transfer-Encoding: chunked\r\n', body));
    expect(r.status).toBe(400);
    expectStatus(r.body, 400);
    expect(r.closed).toBe(true);
    await good.more(2);
    expect(good.failures).toEqual([]);
  });

  test('a CONNECT request (authority-form target) is closed without an answer', async () => {
    const r = await harmless(() => rawH1(`CONNECT cluster-a:443 HTTP/1.1\r\n${H}\r\n`));
    expect(r).toMatchObject({ closed: true, head: '' });
  });

  test('HTTP/1.1 without Host: Node answers 400 itself and closes (no Status body)', async () => {
    const r = await harmless(() => rawH1('GET /cluster-a/api HTTP/1.1\r\n\r\n'));
    expect(r.status).toBe(400);
    expect(r.closed).toBe(true);
  });

  test.each([
    ['a 100 KiB request line', GET(`/cluster-a/${'a'.repeat(100 * 1024)}`)],
    ['3,000 header fields (about 30 KiB)', GET('/cluster-a/api', Array.from({ length: 3000 }, (_, i) => `X-${i}: v\r\n`).join(''))],
  ])('%s: 431 Status (the one header-size limit), closed', async (_name, bytes) => {
    const r = await harmless(() => rawH1(bytes));
    expect(r.status).toBe(431);
    expectStatus(r.body, 431);
    expect(r.closed).toBe(true);
  });
});

describe('request targets and cluster names: a 400 Status over HTTP/1.1 and HTTP/2', () => {
  test.each([
    ['absolute-form', 'https://evil.example/cluster-a/api', 'BAD_PATH'],
    ['asterisk-form', '*', 'BAD_PATH'],
    ['a ".." cluster segment', '/../cluster-a/api', 'INVALID_CLUSTER_NAME'],
    ['a "." cluster segment', '/./cluster-a/api', 'INVALID_CLUSTER_NAME'],
    ['%2e%2e as the cluster', '/%2e%2e/cluster-a/api', 'INVALID_CLUSTER_NAME'],
    ['%2F inside the cluster name', '/cluster-a%2F..%2F1-cluster-b/api', 'INVALID_CLUSTER_NAME'],
    ['an encoded slash instead of the separator', '/cluster-a%2fapi', 'BAD_PATH'],
    ['double encoding (%252e%252e)', '/%252e%252e/api', 'INVALID_CLUSTER_NAME'],
    ['an underscore', '/cluster_a/api', 'INVALID_CLUSTER_NAME'],
    ['a leading hyphen', '/-cluster-a/api', 'INVALID_CLUSTER_NAME'],
    ['a trailing dot', '/cluster-a./api', 'INVALID_CLUSTER_NAME'],
    ['a port', '/cluster-a:443/api', 'INVALID_CLUSTER_NAME'],
    ['userinfo', '/user@cluster-a/api', 'INVALID_CLUSTER_NAME'],
    ['a fragment', '/cluster-a#x/api', 'INVALID_CLUSTER_NAME'],
    ['percent-encoded UTF-8', '/cl%C3%BCster/api', 'INVALID_CLUSTER_NAME'],
  ])('%s (%s)', async (_name, target) => {
    await harmless(async () => {
      const r1 = await rawH1(`${target === '*' ? 'OPTIONS' : 'GET'} ${target} HTTP/1.1\r\n${H}\r\n`);
      expect(r1.status).toBe(400);
      expectStatus(r1.body, 400);
      const r2 = await rawH2Request(us.port, ca, [[':method', target === '*' ? 'OPTIONS' : 'GET'], [':scheme', 'https'], [':path', target], [':authority', 'localhost']]);
      // nghttp2 resets a :path that is neither origin-form nor "*" (RFC 9113 §8.3.1) before any handler runs.
      if (target.startsWith('http')) expect(r2.reset).toBe(H2.code.PROTOCOL_ERROR);
      else expectStatus(r2.body, 400);
    });
  });
});

describe('methods the proxy does not route', () => {
  test.each(['TRACE', 'PROPFIND'])('%s: 405 Status over HTTP/1.1 and HTTP/2', async (method) => {
    await harmless(async () => {
      const r1 = await rawH1(`${method} /cluster-a/api HTTP/1.1\r\n${H}\r\n`);
      expect(r1.status).toBe(405);
      expect(expectStatus(r1.body, 405).reason).toBe('MethodNotAllowed');
      const r2 = await rawH2Request(us.port, ca, [[':method', method], [':scheme', 'https'], [':path', '/cluster-a/api'], [':authority', 'localhost']]);
      expectStatus(r2.body, 405);
    });
  });

  test('an HTTP/2 method that is no token is reset (PROTOCOL_ERROR)', async () => {
    const r = await harmless(() => rawH2Request(us.port, ca, [[':method', 'G T'], [':scheme', 'https'], [':path', '/cluster-a/api'], [':authority', 'localhost']]));
    expect(r.reset).toBe(H2.code.PROTOCOL_ERROR);
  });
});

describe('upgrade requests', () => {
  const UPGRADE = 'Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n';
  test('a bad cluster name with a request pipelined after it: 400 Status, closed, the pipelined request never served', async () => {
    const r = await harmless(() => rawH1(`POST /Bad_Name/api/v1/namespaces/a/pods/p/exec HTTP/1.1\r\n${H}${UPGRADE}\r\n${GET('/cluster-a/api')}`));
    expect(r.status).toBe(400);
    expectStatus(r.body, 400);
    expect(r.body).not.toContain('HTTP/1.1');
    expect(r.closed).toBe(true);
  });

  test('a fragment in the upgrade target: 400 Status, closed', async () => {
    const r = await harmless(() => rawH1(`POST /cluster-a#x/exec HTTP/1.1\r\n${H}${UPGRADE}\r\n`));
    expect(r.status).toBe(400);
    expect(r.closed).toBe(true);
  });

  test('two Host fields on an upgrade: 400 Status, closed', async () => {
    const r = await harmless(() => rawH1(`POST /cluster-a/api/v1/namespaces/a/pods/p/exec HTTP/1.1\r\n${H}Host: evil.example\r\n${UPGRADE}\r\n`));
    expect(r.status).toBe(400);
    expect(expectStatus(r.body, 400).message).toMatch(/2 Host headers/);
    expect(r.closed).toBe(true);
  });
});

const base = (path = '/cluster-a/api', method = 'GET'): Buffer => Buffer.concat([lit(':method', method), lit(':scheme', 'https'), lit(':path', path), lit(':authority', 'localhost')]);
const HEADERS_END = H2.flag.END_HEADERS | H2.flag.END_STREAM;

interface H2Answer {
  resets: { stream: number; code: number }[];
  goAway: { lastStream: number; code: number } | undefined;
  /** The server closed the connection. */
  closed: boolean;
}

/** Resolves after `ms`, without holding the process open: the upper bound of a wait. */
const bound = (ms: number): Promise<false> => new Promise((resolve) => setTimeout(() => resolve(false), ms).unref());

/**
 * Opens a raw HTTP/2 connection, lets `send` write its frames, and waits for the answer: a GOAWAY (then
 * the close), a RST_STREAM or DATA, at most 5 s. `flood`: the client reads nothing until all it wrote has
 * left its socket, so whatever the server answers piles up on its side; then it reads and waits for the close.
 */
async function h2Case(send: (c: RawH2Connection) => void, opts: { flood?: boolean } = {}): Promise<H2Answer> {
  const c = await RawH2Connection.connect(us.port, ca);
  if (opts.flood === true) {
    c.socket.pause();
    send(c);
    await new Promise<void>((resolve) => c.socket.write(Buffer.alloc(0), () => resolve()));
    c.socket.resume();
    await Promise.race([c.closed, bound(10_000)]);
  } else {
    send(c);
    await Promise.race([c.until((fs) => fs.some((f) => f.type === H2.frame.GOAWAY || f.type === H2.frame.RST_STREAM || f.type === H2.frame.DATA)), bound(5_000)]);
    if (c.goAway() !== undefined) await Promise.race([c.closed, bound(5_000)]);
  }
  const answer = { resets: c.resets(), goAway: c.goAway(), closed: c.socket.destroyed };
  c.close();
  return answer;
}

describe('HTTP/2 header blocks', () => {
  test.each([
    ['an empty :path', base('')],
    ['no :path', Buffer.concat([lit(':method', 'GET'), lit(':scheme', 'https'), lit(':authority', 'localhost')])],
    ['NUL in :path', base('/cluster-a/a\u0000pi')],
    ['a space in :path', base('/cluster-a/a pi')],
    ['connection: keep-alive', Buffer.concat([base(), lit('connection', 'keep-alive')])],
    ['transfer-encoding: chunked', Buffer.concat([base(), lit('transfer-encoding', 'chunked')])],
    ['te: gzip', Buffer.concat([base(), lit('te', 'gzip')])],
    ['upgrade: websocket', Buffer.concat([base(), lit('upgrade', 'websocket')])],
    ['an uppercase field name', Buffer.concat([base(), lit('X-Upper', 'v')])],
    ['a pseudo-header after a regular field', Buffer.concat([lit(':method', 'GET'), lit(':scheme', 'https'), lit('x-a', 'b'), lit(':path', '/cluster-a/api'), lit(':authority', 'localhost')])],
    ['an unknown pseudo-header', Buffer.concat([base(), lit(':evil', 'x')])],
  ])('%s: the stream is reset (PROTOCOL_ERROR), the connection stays', async (_name, block) => {
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.HEADERS, HEADERS_END, 1, block))));
    expect(c.resets).toEqual([{ stream: 1, code: H2.code.PROTOCOL_ERROR }]);
    expect(c.goAway).toBeUndefined();
  });

  test('content-length larger than the DATA sent: the stream is reset (PROTOCOL_ERROR); its headers were valid, so it may have been dialled', async () => {
    // As with HTTP/1.1 bodies: admitted on its headers, the upstream copy aborted with the stream.
    const c = await h2Case((x) => x.write(frame(H2.frame.HEADERS, H2.flag.END_HEADERS, 1, Buffer.concat([base('/cluster-a/api', 'POST'), lit('content-length', '10')])), frame(H2.frame.DATA, H2.flag.END_STREAM, 1, Buffer.from('hello'))));
    expect(c.resets).toEqual([{ stream: 1, code: H2.code.PROTOCOL_ERROR }]);
    await good.more(2);
    expect(good.failures).toEqual([]);
  });

  test('DATA beyond content-length: GOAWAY, closed; may have been dialled, as above', async () => {
    const c = await h2Case((x) => x.write(frame(H2.frame.HEADERS, H2.flag.END_HEADERS, 1, Buffer.concat([base('/cluster-a/api', 'POST'), lit('content-length', '2')])), frame(H2.frame.DATA, H2.flag.END_STREAM, 1, Buffer.from('hello'))));
    expect(c.goAway).toBeDefined();
    expect(c.closed).toBe(true);
    await good.more(2);
    expect(good.failures).toEqual([]);
  });

  test('HPACK bomb: one 4 KiB field in the dynamic table referenced 2,000 times (8 MB decoded) resets the stream (ENHANCE_YOUR_CALM)', async () => {
    const block = Buffer.concat([base(), lit('x-bomb', 'b'.repeat(4000), { indexed: true }), ...Array.from({ length: 2000 }, () => hpackIndexed(62))]);
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.HEADERS, HEADERS_END, 1, block))));
    expect(c.resets).toEqual([{ stream: 1, code: H2.code.ENHANCE_YOUR_CALM }]);
  });

  test('an HPACK index past the tables: GOAWAY COMPRESSION_ERROR', async () => {
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.HEADERS, HEADERS_END, 1, Buffer.concat([base(), hpackIndexed(500)])))));
    expect(c.goAway?.code).toBe(H2.code.COMPRESSION_ERROR);
  });

  test.each([
    ['CR LF (a header injection attempt)', 'a\r\nContent-Length: 0\r\n\r\nGET /smuggled HTTP/1.1\r\nX-Z: z'],
    ['NUL', 'a\u0000b'],
  ])('%s in a field value: nghttp2 drops the field, so the request goes on without it, never injected', async (_name, value) => {
    // Not refused, so not `harmless`: the request is valid without the field and is forwarded.
    const r = await rawH2Request(us.port, ca, [[':method', 'GET'], [':scheme', 'https'], [':path', '/cluster-a/api/v1/pods'], [':authority', 'localhost'], ['x-a', value]]);
    expect(JSON.parse(r.body)).toMatchObject({ cluster: 'cluster-a' });
    const got = chain.clusters.a.serviceProxy.received.at(-1)!;
    expect(got.headers['x-a']).toBeUndefined();
    expect(got.headers['x-z']).toBeUndefined();
    expect(chain.clusters.a.serviceProxy.received.some((x) => x.url.includes('smuggled'))).toBe(false);
  });
});

describe('HTTP/2 frame floods and protocol errors', () => {
  test('CONTINUATION flood (empty frames, END_HEADERS never sent): GOAWAY, closed', async () => {
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.HEADERS, 0, 1, base()), ...Array.from({ length: 5000 }, () => frame(H2.frame.CONTINUATION, 0, 1)))));
    expect(c.goAway).toMatchObject({ lastStream: 1 });
    expect(c.closed).toBe(true);
  });

  test('CONTINUATION flood (one field each): GOAWAY, closed', async () => {
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.HEADERS, 0, 1, base()), ...Array.from({ length: 5000 }, (_, i) => frame(H2.frame.CONTINUATION, 0, 1, lit(`x-c${i}`, 'v'))))));
    expect(c.goAway).toBeDefined();
    expect(c.closed).toBe(true);
  });

  test('HEADERS without END_HEADERS, then the client vanishes (CVE-2024-27983 shape): nothing else notices', async () => {
    await harmless(async () => {
      const c = await RawH2Connection.connect(us.port, ca);
      c.write(frame(H2.frame.HEADERS, 0, 1, base()), frame(H2.frame.CONTINUATION, 0, 1, lit('x-a', 'b')));
      c.socket.destroy();
      await c.closed;
    });
  });

  test('SETTINGS flood from a client that reads nothing: the connection is closed', async () => {
    const c = await harmless(() => h2Case((x) => {
      for (let i = 0; i < 50; i++) x.write(...Array.from({ length: 2000 }, () => frame(H2.frame.SETTINGS, 0, 0)));
    }, { flood: true }));
    expect(c.closed).toBe(true);
  });

  test('PING flood from a client that reads nothing: the connection is closed', async () => {
    const c = await harmless(() => h2Case((x) => {
      for (let i = 0; i < 50; i++) x.write(...Array.from({ length: 2000 }, () => frame(H2.frame.PING, 0, 0, Buffer.alloc(8))));
    }, { flood: true }));
    expect(c.closed).toBe(true);
  });

  test('a SETTINGS frame with 40 entries: GOAWAY ENHANCE_YOUR_CALM', async () => {
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.SETTINGS, 0, 0, Buffer.concat(Array.from({ length: 40 }, () => Buffer.from([0, 3, 0, 0, 0, 100])))))));
    expect(c.goAway?.code).toBe(H2.code.ENHANCE_YOUR_CALM);
  });

  test('connection window pushed past 2^31-1: GOAWAY FLOW_CONTROL_ERROR', async () => {
    const inc = Buffer.from([0x7f, 0xff, 0xff, 0xff]);
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.WINDOW_UPDATE, 0, 0, inc), frame(H2.frame.WINDOW_UPDATE, 0, 0, inc))));
    expect(c.goAway?.code).toBe(H2.code.FLOW_CONTROL_ERROR);
  });

  test('a request on an even (server-initiated) stream id: GOAWAY PROTOCOL_ERROR', async () => {
    const c = await harmless(() => h2Case((x) => x.write(frame(H2.frame.HEADERS, HEADERS_END, 2, base()))));
    expect(c.goAway?.code).toBe(H2.code.PROTOCOL_ERROR);
  });
});

describe('zero-window slow read', () => {
  let stall: RunningUserServer;
  beforeAll(async () => {
    stall = await chain.startUserServer({ 'client-stall-timeout': '1s' });
  });
  afterAll(async () => {
    await stall?.close();
  });

  test('a client that grants no window for a 16 MiB response has its stream reset after --client-stall-timeout; requests beside it are served', async () => {
    // SETTINGS_INITIAL_WINDOW_SIZE = 0: the server may send headers, never a byte of body.
    const c = await RawH2Connection.connect(stall.port, ca, { settings: Buffer.from([0, 4, 0, 0, 0, 0]) });
    try {
      c.write(frame(H2.frame.HEADERS, HEADERS_END, 1, base(`/cluster-a/large?bytes=${16 << 20}`)));
      const started = performance.now();
      // Meanwhile cluster-a, whose agent carries the stalled tunnel, still answers other clients.
      for (let i = 0; i < 5; i++) expect((await h1(stall.port, ca, '/cluster-a/api')).status).toBe(200);
      expect(await c.until((fs) => fs.some((f) => f.type === H2.frame.RST_STREAM && f.stream === 1))).toBe(true);
      expect(performance.now() - started).toBeLessThan(10_000);
      expect(c.frames.filter((f) => f.type === H2.frame.DATA && f.payload.length > 0)).toEqual([]);
      expect(c.goAway()).toBeUndefined();
    } finally {
      c.close();
    }
    expect((await h2(stall.port, ca, '/cluster-a/api')).status).toBe(200);
  });
});
