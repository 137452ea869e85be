import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { buildConfig, readSettings } from '../../src/config/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createUserServer, type UserServer } from '../../src/server/user-server.ts';
import { DialError, type Dialer } from '../../src/tunnel/dialer.ts';
import { makeCerts, standaloneServerSettings } from '../harness/certs.ts';
import { loopbackDialer } from '../harness/loopback-dialer.ts';
import { H2, RawH2Connection, h2Frame } from '../harness/raw-h2.ts';

/**
 * The limits the HTTPS front puts on clients (README "Limits on the client side"). They act before any
 * tunnel is needed, so no ANP chain runs here: the user-server gets a dialer of the test's own.
 */

const dir = mkdtempSync(path.join(os.tmpdir(), 'front-limits-'));
const certs = makeCerts(path.join(dir, 'certs'));
const ca = certs.read('ca.crt');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Front {
  us: UserServer;
  port: number;
  logs: string[];
  /** HTTP/2 streams the server accepted (its 'stream' events). */
  streams: number;
}

const running: (() => Promise<void>)[] = [];
/** Dials held open by hangingDialer; before the servers close they fail, and so do any dials after. */
const held = new Set<() => void>();
let releasing = false;
afterEach(async () => {
  releasing = true;
  for (const fail of [...held]) fail();
  for (const stop of running.splice(0).reverse()) await stop().catch(() => {});
  releasing = false;
});

async function startFront(settings: Record<string, string>, dialer: Dialer): Promise<Front> {
  const all: Record<string, string> = { ...standaloneServerSettings(certs, dir), 'log-level': 'warn', ...settings };
  const config = buildConfig(readSettings(Object.entries(all).map(([k, v]) => `--${k}=${v}`), {}).values);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(line);
      cb();
    },
  });
  const us = createUserServer(config, createLogger(config.log.level, sink), { dialer });
  const front: Front = { us, port: 0, logs, streams: 0 };
  us.app.server.on('stream', () => front.streams++);
  front.port = (await us.listen()).port;
  running.push(() => us.close());
  return front;
}

/** No agent for any cluster: every request is answered at once with 503. */
const noAgent: Dialer = {
  dial: () => Promise.reject(new DialError('agent_unavailable', 'No agent available')),
  close: () => {},
};

/** A dial that never completes until the client goes away: requests stay open as long as the client wants. */
function hangingDialer(): Dialer {
  return {
    dial: (_target, signal) =>
      new Promise<Duplex>((_resolve, reject) => {
        const fail = (): void => {
          held.delete(fail);
          reject(new DialError('aborted', 'client went away'));
        };
        held.add(fail);
        if (releasing || signal?.aborted) fail();
        signal?.addEventListener('abort', fail, { once: true });
      }),
    close: () => {},
  };
}

// --- frames for the byte-level HTTP/2 client (test/harness/raw-h2.ts), which ignores the server's limits as an attacker does ---

/** HPACK without Huffman or dynamic table: GET https://localhost<path>. */
function getHeaderBlock(pathName: string): Buffer {
  const literal = (nameIndex: number, value: string): Buffer => Buffer.concat([Buffer.from([nameIndex, value.length]), Buffer.from(value, 'latin1')]);
  // 0x82 :method GET, 0x87 :scheme https; :path (4) and :authority (1) as literals without indexing.
  return Buffer.concat([Buffer.from([0x82, 0x87]), literal(0x04, pathName), literal(0x01, 'localhost')]);
}

function rstStream(stream: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return h2Frame(H2.frame.RST_STREAM, 0, stream, p);
}

function h2Session(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: 'localhost' });
    s.once('error', reject);
    s.once('remoteSettings', () => resolve(s));
  });
}

function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers);
    let status = 0;
    let body = '';
    stream.on('response', (h) => (status = Number(h[':status'])));
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => (body += c));
    stream.on('end', () => resolve({ status, body }));
    stream.on('error', reject);
    stream.end();
  });
}

function h1Request(port: number, pathName: string, opts: { headers?: Record<string, string>; agent?: https.Agent } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: pathName, ca, servername: 'localhost', agent: opts.agent ?? false, headers: opts.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Resolves when the socket is closed, however (events.once would reject on its 'error'). */
function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve())));
}

/** A raw TLS connection that negotiated HTTP/1.1. */
async function h1Socket(port: number): Promise<tls.TLSSocket> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
  socket.on('error', () => {});
  await once(socket, 'secureConnect');
  return socket;
}

describe('HTTP/2 front', () => {
  test('SETTINGS advertises 250 concurrent streams and the header limit by default, not Node\'s 2^32-1', async () => {
    const f = await startFront({}, noAgent);
    const session = await h2Session(f.port);
    try {
      expect(session.remoteSettings.maxConcurrentStreams).toBe(250);
      expect(session.remoteSettings.maxHeaderListSize).toBe(65536);
    } finally {
      session.destroy();
    }
    const custom = await startFront({ 'http2-max-concurrent-streams': '17' }, noAgent);
    const s2 = await h2Session(custom.port);
    expect(s2.remoteSettings.maxConcurrentStreams).toBe(17);
    s2.destroy();
  });

  test('--http2-idle-timeout: a connection idle after its request gets GOAWAY and closes', async () => {
    const f = await startFront({ 'http2-idle-timeout': '1s' }, noAgent);
    const session = await h2Session(f.port);
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
    const closed = new Promise<void>((resolve) => session.once('close', () => resolve()));
    const started = Date.now();
    expect((await h2Request(session, { ':path': '/cluster-a/api' })).status).toBe(503);
    expect(await goaway).toBe(http2.constants.NGHTTP2_NO_ERROR);
    await closed;
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  /** Opens streams 1, 3, 5, ... in one write, request bodies still to come; their dials never finish. */
  function openStreams(c: RawH2Connection, count: number): number[] {
    const ids = Array.from({ length: count }, (_, i) => 1 + 2 * i);
    c.socket.write(Buffer.concat(ids.map((id) => h2Frame(H2.frame.HEADERS, H2.flag.END_HEADERS, id, getHeaderBlock('/cluster-a/api')))));
    return ids;
  }

  test('streams beyond the limit are refused, not queued: 260 opened at once, 250 served, 10 REFUSED_STREAM', async () => {
    const f = await startFront({}, hangingDialer());
    // Before it has acknowledged the SETTINGS, a client may not know the limit: the excess is refused
    // stream by stream and the connection stays.
    const c = await RawH2Connection.connect(f.port, ca, { ackSettings: false });
    try {
      const ids = openStreams(c, 260);
      expect(await c.until(() => c.resets().length >= 10 && f.streams >= 250)).toBe(true);
      await new Promise((r) => setTimeout(r, 300));
      expect(c.resets()).toEqual(ids.slice(250).map((stream) => ({ stream, code: H2.code.REFUSED_STREAM })));
      expect(f.streams).toBe(250);
      expect(c.goAway()).toBeUndefined();
      expect(c.socket.destroyed).toBe(false);
    } finally {
      c.close();
    }
  });

  test('a client that exceeds the limit it acknowledged loses the connection (GOAWAY PROTOCOL_ERROR); only 250 streams were served', async () => {
    const f = await startFront({}, hangingDialer());
    const c = await RawH2Connection.connect(f.port, ca);
    try {
      openStreams(c, 260);
      await c.closed;
      expect(c.goAway()).toMatchObject({ lastStream: 2 * 250 - 1, code: H2.code.PROTOCOL_ERROR });
      expect(f.streams).toBe(250);
    } finally {
      c.close();
    }
  });

  test('--http2-max-invalid-frames: a client that keeps opening refused streams is disconnected', async () => {
    const f = await startFront({ 'http2-max-concurrent-streams': '10', 'http2-max-invalid-frames': '5' }, hangingDialer());
    const c = await RawH2Connection.connect(f.port, ca, { ackSettings: false });
    try {
      openStreams(c, 40);
      await c.closed;
      // Each refused stream counts as an invalid frame; the connection goes after the 6th or 7th.
      expect(c.resets().length).toBeGreaterThanOrEqual(5);
      expect(c.resets().length).toBeLessThanOrEqual(7);
      expect(f.streams).toBe(10);
    } finally {
      c.close();
    }
  });

  test('a rapid-reset flood gets GOAWAY once --http2-stream-reset-burst is spent, and the connection is closed', async () => {
    const f = await startFront({ 'http2-stream-reset-burst': '20', 'http2-stream-reset-rate': '1' }, hangingDialer());
    const c = await RawH2Connection.connect(f.port, ca);
    try {
      // Streams opened and cancelled at once (CVE-2023-44487), 10 at a time, until the server says stop.
      // Node's own limit (1000 at once) would take all 400.
      let next = 1;
      while (next < 800 && c.goAway() === undefined && !c.socket.destroyed) {
        const batch: Buffer[] = [];
        for (let i = 0; i < 10; i++, next += 2) batch.push(h2Frame(H2.frame.HEADERS, H2.flag.END_STREAM | H2.flag.END_HEADERS, next, getHeaderBlock('/cluster-a/api')), rstStream(next, H2.code.CANCEL));
        c.socket.write(Buffer.concat(batch));
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(await c.until((fs) => fs.some((x) => x.type === H2.frame.GOAWAY))).toBe(true);
      const goAway = c.goAway()!;
      expect(goAway.code).not.toBe(H2.code.NO_ERROR);
      // The 21st reset (stream 41) is the first with no token left; a token or two may have refilled.
      expect(goAway.lastStream).toBeGreaterThanOrEqual(41);
      expect(goAway.lastStream).toBeLessThanOrEqual(41 + 2 * 3);
      expect(next).toBeLessThan(800);
      await c.closed;
    } finally {
      c.close();
    }
  });

  test('one --max-header-bytes for HTTP/1.1 (431) and HTTP/2 (stream reset); --http2-max-header-pairs caps HTTP/2 fields', async () => {
    const f = await startFront({ 'max-header-bytes': '8192', 'http2-max-header-pairs': '40' }, noAgent);
    const big = { 'x-big': 'a'.repeat(10_000) };
    const fits = { 'x-fits': 'a'.repeat(6_000) };
    expect((await h1Request(f.port, '/cluster-a/api', { headers: big })).status).toBe(431);
    expect((await h1Request(f.port, '/cluster-a/api', { headers: fits })).status).toBe(503);

    const session = await h2Session(f.port);
    try {
      expect(session.remoteSettings.maxHeaderListSize).toBe(8192);
      await expect(h2Request(session, { ':path': '/cluster-a/api', ...big })).rejects.toThrow(/NGHTTP2_ENHANCE_YOUR_CALM|stream error|RST_STREAM|closed/i);
      const many = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`x-h${i}`, 'v']));
      const fewer = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`x-h${i}`, 'v']));
      const s2 = await h2Session(f.port);
      await expect(h2Request(s2, { ':path': '/cluster-a/api', ...many })).rejects.toThrow();
      s2.destroy();
      const s3 = await h2Session(f.port);
      expect((await h2Request(s3, { ':path': '/cluster-a/api', ...fits })).status).toBe(503);
      expect((await h2Request(s3, { ':path': '/cluster-a/api', ...fewer })).status).toBe(503);
      s3.destroy();
    } finally {
      session.destroy();
    }
  });
});

describe('HTTP/1.1 on the same server', () => {
  test('a client trickling its headers is answered 408 and disconnected within --request-headers-timeout', async () => {
    const f = await startFront({ 'request-headers-timeout': '2s' }, noAgent);
    expect(f.us.app.server).toMatchObject({ headersTimeout: 2000, requestTimeout: 0 });
    const socket = await h1Socket(f.port);
    const started = performance.now();
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (received += d));
    const request = 'GET /cluster-a/api HTTP/1.1\r\nHost: localhost\r\nX-Slow: ' + 'a'.repeat(1000);
    let i = 0;
    const trickle = setInterval(() => {
      if (!socket.destroyed && i < request.length) socket.write(request[i++]!);
    }, 200);
    try {
      await closed(socket);
    } finally {
      clearInterval(trickle);
    }
    const elapsed = performance.now() - started;
    expect(i).toBeGreaterThan(3);
    expect(elapsed).toBeGreaterThanOrEqual(1_900);
    // 2 s, checked every second, plus scheduling slack.
    expect(elapsed).toBeLessThan(4_500);
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
  });

  test('a connection that sends nothing, after its TLS handshake or instead of it, is closed within --request-headers-timeout too', async () => {
    const f = await startFront({ 'request-headers-timeout': '2s' }, noAgent);
    const silent = await h1Socket(f.port);
    const noHandshake = net.connect(f.port, '127.0.0.1');
    noHandshake.on('error', () => {});
    await once(noHandshake, 'connect');
    const started = performance.now();
    await Promise.all([closed(silent), closed(noHandshake)]);
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(1_500);
    expect(elapsed).toBeLessThan(4_500);
    // A client that is quick is not affected: the same server answers a request on a fresh connection.
    expect((await h1Request(f.port, '/cluster-a/api')).status).toBe(503);
  });

  test('no request timeout: a 10 s streamed response and a 6 s trickled upload pass with a 2 s headers timeout', async () => {
    // The service-proxy stand-in: a watch-like body, one line every 500 ms for 10 s; and an upload sink.
    const upstream = https.createServer({ cert: certs.read('service-proxy.crt'), key: certs.read('service-proxy.key') }, (req, res) => {
      if (req.method === 'POST') {
        let n = 0;
        req.on('data', (c: Buffer) => (n += c.length));
        req.on('end', () => res.end(`received ${n}`));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      let sent = 0;
      const tick = setInterval(() => {
        res.write(`{"type":"BOOKMARK","n":${sent++}}\n`);
        if (sent === 20) {
          clearInterval(tick);
          res.end();
        }
      }, 500);
      res.on('close', () => clearInterval(tick));
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    running.push(() => new Promise((r) => upstream.close(() => r())));
    const f = await startFront({ 'request-headers-timeout': '2s' }, loopbackDialer((upstream.address() as net.AddressInfo).port));

    const watch = h1Request(f.port, '/cluster-a/api/v1/namespaces/default/pods?watch=true');
    const upload = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: f.port, method: 'POST', path: '/cluster-a/api/v1/namespaces/default/configmaps', ca, servername: 'localhost', agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      let parts = 0;
      const t = setInterval(() => {
        req.write('x'.repeat(100));
        if (++parts === 12) {
          clearInterval(t);
          req.end();
        }
      }, 500);
    });
    const started = performance.now();
    const [w, u] = await Promise.all([watch, upload]);
    expect(performance.now() - started).toBeGreaterThan(9_000);
    expect(w.status).toBe(200);
    expect(w.body.trim().split('\n')).toHaveLength(20);
    expect(u).toEqual({ status: 200, body: 'received 1200' });
  }, 30_000);
});

describe('open connections', () => {
  test('connections beyond --max-connections are closed on accept; open ones keep working, and a freed slot is reused', async () => {
    const f = await startFront({ 'max-connections': '3' }, noAgent);
    expect(f.us.app.server.maxConnections).toBe(3);
    const a = await h2Session(f.port);
    const b = await h2Session(f.port);
    const c = await h1Socket(f.port);
    try {
      // A 4th, either protocol, is closed before its TLS handshake completes.
      for (const alpn of [['h2'], ['http/1.1']]) {
        const extra = tls.connect({ host: '127.0.0.1', port: f.port, ca, servername: 'localhost', ALPNProtocols: alpn });
        let secured = false;
        extra.on('secureConnect', () => (secured = true));
        extra.on('error', () => {});
        await closed(extra);
        expect(secured).toBe(false);
      }
      // The three still serve requests.
      expect((await h2Request(a, { ':path': '/cluster-a/api' })).status).toBe(503);
      expect((await h2Request(b, { ':path': '/cluster-a/api' })).status).toBe(503);
      c.write('GET /cluster-a/api HTTP/1.1\r\nHost: localhost\r\n\r\n');
      const [first] = (await once(c, 'data')) as [Buffer];
      expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 503 /);
      expect(f.logs.some((l) => l.includes('--max-connections reached'))).toBe(true);

      // Once one goes, a new client gets in.
      a.destroy();
      await new Promise((r) => setTimeout(r, 200));
      const d = await h2Session(f.port);
      expect((await h2Request(d, { ':path': '/cluster-a/api' })).status).toBe(503);
      d.destroy();
    } finally {
      a.destroy();
      b.destroy();
      c.destroy();
    }
  });

  test('the default cap is 10,000 connections', async () => {
    const f = await startFront({}, noAgent);
    expect(f.us.app.server.maxConnections).toBe(10_000);
  });
});
