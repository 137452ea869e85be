import { randomBytes } from 'node:crypto';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { metricValue } from '../harness/anp.ts';
import { type Chain, type RunningUserServer, useChain } from '../harness/chain.ts';
import { h1 } from '../harness/client.ts';

let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
// destHost only, as the addon runs ANP: a cluster with no agent of its own gets no tunnel (503).
useChain((c) => ({ chain, us, ca } = c), { strategies: 'destHost' });

const EXEC = '/api/v1/namespaces/ns1/pods/p1/exec?command=sh&command=-c&command=echo%20a%2Fb&stdin=true&stdout=true';

interface RawUpgrade {
  socket: tls.TLSSocket;
  status: number;
  head: string;
  /** Bytes that followed the response head. */
  rest: Buffer;
}

/** An HTTP/1.1 upgrade written by hand, as kubectl's SPDY path does: POST, Content-Length 0, Upgrade. */
function rawUpgrade(port: number, path: string, opts: { upgrade?: string; headers?: string[]; alpn?: string[] | undefined } = {}): Promise<RawUpgrade> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: 'alpn' in opts ? opts.alpn : ['http/1.1'] }, () => {
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nAuthorization: Bearer upgrade-token\r\nContent-Length: 0\r\n` +
          `Connection: Upgrade\r\nUpgrade: ${opts.upgrade ?? 'SPDY/3.1'}\r\n` +
          'X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: channel.k8s.io\r\n' +
          (opts.headers ?? []).map((h) => `${h}\r\n`).join('') +
          '\r\n',
      );
    });
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.removeListener('data', onData);
      socket.pause();
      const head = buf.subarray(0, end).toString('latin1');
      resolve({ socket, status: Number(head.slice(9, 12)), head, rest: buf.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

/** Reads until `n` bytes arrived (after `already`), or the socket ends. */
function readBytes(socket: tls.TLSSocket, n: number, already: Buffer = Buffer.alloc(0)): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks = [already];
    let got = already.length;
    const done = (): void => {
      socket.removeListener('data', onData);
      socket.pause();
      resolve(Buffer.concat(chunks));
    };
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= n) done();
    };
    if (got >= n) return done();
    socket.on('data', onData);
    socket.once('end', done);
    socket.resume();
  });
}

/** Rest of the connection until it closes. */
function readToEnd(socket: tls.TLSSocket, already: Buffer): Promise<{ data: Buffer; ended: boolean }> {
  return new Promise((resolve) => {
    const chunks = [already];
    if (socket.destroyed) {
      // Closed while paused: what arrived is still buffered.
      for (let c: Buffer | null; (c = socket.read() as Buffer | null) !== null; ) chunks.push(c);
      resolve({ data: Buffer.concat(chunks), ended: socket.readableEnded });
      return;
    }
    let ended = false;
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => {
      ended = true;
    });
    socket.once('close', () => resolve({ data: Buffer.concat(chunks), ended }));
    socket.resume();
  });
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

function openWebSocket(path: string, protocols = ['v5.channel.k8s.io', 'v4.channel.k8s.io']): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${us.port}${path}`, protocols, { ca, headers: { Authorization: 'Bearer ws-token' } });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => reject(Object.assign(new Error(`unexpected ${res.statusCode}`), { statusCode: res.statusCode, headers: res.headers, body })));
    });
  });
}

function nextMessage(ws: WebSocket): Promise<{ data: Buffer; binary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data, binary) => resolve({ data: data as Buffer, binary })));
}

describe('WebSocket upgrades (kubectl exec v5.channel.k8s.io)', () => {
  test('frames pass both ways on the negotiated subprotocol, and the target saw the routed request', async () => {
    const before = chain.clusters.a.target.requests.length;
    const ws = await openWebSocket(`/cluster-a${EXEC}`);
    expect(ws.protocol).toBe('v5.channel.k8s.io');
    const binary = randomBytes(256);
    ws.send(binary);
    const echoed = await nextMessage(ws);
    expect(echoed.binary).toBe(true);
    expect(Buffer.compare(echoed.data, binary)).toBe(0);
    ws.send('stdin text');
    expect((await nextMessage(ws)).data.toString()).toBe('stdin text');
    ws.send('bytes:2097152');
    const big = await nextMessage(ws);
    expect(big.data.length).toBe(2_097_152);
    expect(big.data.every((b) => b === 0x5a)).toBe(true);
    ws.close(1000);
    await new Promise((r) => ws.once('close', r));

    const seen = chain.clusters.a.target.requests.slice(before).find((r) => r.url.includes('/exec'))!;
    expect(seen.url).toBe(EXEC);
    expect(seen.headers.authorization).toBe('Bearer ws-token');
    expect(seen.headers['sec-websocket-protocol']).toBe('v5.channel.k8s.io,v4.channel.k8s.io');
    const atDouble = chain.clusters.a.serviceProxy.received.findLast((r) => r.url === EXEC)!;
    expect(atDouble.headers['cluster-proxy-service']).toBe('kubernetes');
    expect(atDouble.headers['cluster-proxy-namespace']).toBe('default');
    expect(atDouble.headers['cluster-proxy-port']).toBe('443');
  });

  test('a close code from the managed cluster reaches the client', async () => {
    const ws = await openWebSocket('/1-cluster-b/api/v1/namespaces/ns/pods/p/portforward?ports=8080', ['v4.channel.k8s.io']);
    expect(ws.protocol).toBe('v4.channel.k8s.io');
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.send('close:4001');
    expect(await closed).toBe(4001);
  });

  test('a refused upgrade is relayed as a normal response with the body intact', async () => {
    const err = await openWebSocket('/cluster-a/upgrade/refuse').catch((e: Error & { statusCode: number; body: string }) => e);
    expect((err as { statusCode: number }).statusCode).toBe(403);
    expect(JSON.parse((err as { body: string }).body)).toMatchObject({ kind: 'Status', code: 403, message: 'upgrade refused by cluster-a' });
  });
});

describe('SPDY/3.1 and other upgrades, byte for byte', () => {
  test.each([['ALPN http/1.1', ['http/1.1']], ['no ALPN', undefined]] as const)('%s: 101 with its headers, then 5,000 arbitrary bytes come back identical', async (_name, alpn) => {
    const up = await rawUpgrade(us.port, `/cluster-a${EXEC}`, { alpn: alpn === undefined ? undefined : [...alpn] });
    expect(up.status).toBe(101);
    expect(up.head).toMatch(/\r\nUpgrade: SPDY\/3\.1(\r\n|$)/i);
    expect(up.head).toMatch(/\r\nX-Stream-Protocol-Version: v4\.channel\.k8s\.io(\r\n|$)/i);
    expect(up.head).toMatch(/\r\nConnection: Upgrade(\r\n|$)/i);
    const payload = Buffer.concat([Buffer.from([0x80, 0x03, 0x00, 0x01]), randomBytes(4996)]);
    up.socket.write(payload);
    const back = await readBytes(up.socket, payload.length, up.rest);
    expect(Buffer.compare(back, payload)).toBe(0);
    const seen = chain.clusters.a.target.requests.findLast((r) => r.method === 'POST' && r.url === EXEC)!;
    expect(seen.headers['x-stream-protocol-version']).toBe('v4.channel.k8s.io, channel.k8s.io');
    expect(seen.headers['content-length']).toBe('0');
    up.socket.destroy();
  });

  test('the managed side ending the stream ends the client connection cleanly', async () => {
    const up = await rawUpgrade(us.port, `/1-cluster-b${EXEC}`);
    expect(up.status).toBe(101);
    expect(up.head).toContain('X-Cluster: 1-cluster-b');
    const reading = readToEnd(up.socket, up.rest);
    up.socket.write('last words, bye');
    const { data, ended } = await reading;
    expect(data.toString()).toBe('last words, bye');
    expect(ended).toBe(true);
    await waitFor(() => chain.clusters.b.target.openUpgrades() === 0);
  });

  test('the client going away closes the session on the managed side', async () => {
    const before = chain.clusters.a.target.openUpgrades();
    const up = await rawUpgrade(us.port, `/cluster-a${EXEC}`);
    expect(up.status).toBe(101);
    await waitFor(() => chain.clusters.a.target.openUpgrades() === before + 1);
    up.socket.destroy();
    await waitFor(() => chain.clusters.a.target.openUpgrades() === before);
    await waitFor(async () => (await metricValue(await us.server.metrics.registry.metrics(), 'cluster_proxy_user_server_upgraded_sessions')) === 0);
  });

  test('each upgrade gets a tunnel of its own, which is never pooled', async () => {
    const dials = await us.server.metrics.successfulDials();
    for (let i = 0; i < 3; i++) {
      const up = await rawUpgrade(us.port, `/cluster-a${EXEC}`);
      expect(up.status).toBe(101);
      const reading = readToEnd(up.socket, up.rest);
      up.socket.write('bye');
      await reading;
    }
    expect(await us.server.metrics.successfulDials()).toBe(dials + 3);
    // Ordinary requests afterwards still work on the pool.
    expect((await h1(us.port, ca, '/cluster-a/api/v1/pods')).status).toBe(200);
  });
});

describe('proxy-made answers before the 101 are Kubernetes Status', () => {
  test('no agent for the cluster: 503 with Retry-After, then the connection closes', async () => {
    const up = await rawUpgrade(us.port, `/no-such-cluster${EXEC}`);
    expect(up.status).toBe(503);
    expect(up.head).toMatch(/\r\nretry-after: \d+/i);
    const { data } = await readToEnd(up.socket, up.rest);
    expect(JSON.parse(data.toString())).toMatchObject({ kind: 'Status', code: 503, reason: 'ServiceUnavailable', details: { name: 'no-such-cluster' } });
  });

  test('a bad cluster name: 400', async () => {
    const up = await rawUpgrade(us.port, `/Bad_Name${EXEC}`);
    expect(up.status).toBe(400);
    const { data } = await readToEnd(up.socket, up.rest);
    expect(JSON.parse(data.toString())).toMatchObject({ kind: 'Status', code: 400 });
  });

  test('a refusal with a chunked body on a kept-alive connection is relayed and the connection closed', async () => {
    const up = await rawUpgrade(us.port, '/cluster-a/upgrade/refuse');
    expect(up.status).toBe(403);
    expect(up.head).not.toMatch(/transfer-encoding/i);
    expect(up.head).toMatch(/\r\nConnection: close/i);
    const { data } = await readToEnd(up.socket, up.rest);
    expect(JSON.parse(data.toString())).toMatchObject({ kind: 'Status', code: 403 });
  });
});

describe('bounds, timeouts and drain', () => {
  let bounded: RunningUserServer;
  beforeAll(async () => {
    bounded = await chain.startUserServer({ 'max-upgrades-per-cluster': '2', 'response-headers-timeout': '1s', 'client-stall-timeout': '1s', 'upgrade-idle-timeout': '1500ms' });
  });
  afterAll(async () => {
    await bounded?.close();
  });

  test('open sessions are bounded per cluster: the next one gets 429, another cluster is not affected', async () => {
    const first = await rawUpgrade(bounded.port, `/cluster-a${EXEC}`);
    const second = await rawUpgrade(bounded.port, `/cluster-a${EXEC}`);
    expect([first.status, second.status]).toEqual([101, 101]);
    expect(await metricValue(await bounded.server.metrics.registry.metrics(), 'cluster_proxy_user_server_upgraded_sessions')).toBe(2);
    const third = await rawUpgrade(bounded.port, `/cluster-a${EXEC}`);
    expect(third.status).toBe(429);
    expect(JSON.parse((await readToEnd(third.socket, third.rest)).data.toString())).toMatchObject({ code: 429, reason: 'TooManyRequests' });
    const other = await rawUpgrade(bounded.port, `/1-cluster-b${EXEC}`);
    expect(other.status).toBe(101);
    other.socket.destroy();
    first.socket.destroy();
    await waitFor(() => bounded.server.upgrades.open === 1);
    const again = await rawUpgrade(bounded.port, `/cluster-a${EXEC}`);
    expect(again.status).toBe(101);
    again.socket.destroy();
    second.socket.destroy();
    await waitFor(() => bounded.server.upgrades.open === 0);
  });

  test('no answer to the upgrade request: 504 after the response-headers timeout', async () => {
    const up = await rawUpgrade(bounded.port, '/cluster-a/upgrade/hang');
    expect(up.status).toBe(504);
    const { data } = await readToEnd(up.socket, up.rest);
    expect(JSON.parse(data.toString())).toMatchObject({ kind: 'Status', code: 504, reason: 'Timeout' });
  });

  test('a client that stops reading is cut off, and its session closed on the managed side', async () => {
    const before = chain.clusters.a.target.openUpgrades();
    const up = await rawUpgrade(bounded.port, `/cluster-a${EXEC}`);
    expect(up.status).toBe(101);
    // Never read: the echo fills every buffer on the way back.
    const closed = new Promise<void>((r) => up.socket.once('close', () => r()));
    up.socket.on('error', () => {});
    const chunk = Buffer.alloc(1 << 20, 0x41);
    const until = Date.now() + 20_000;
    const pump = (): void => {
      while (!up.socket.destroyed && Date.now() < until && up.socket.write(chunk));
      if (!up.socket.destroyed && Date.now() < until) up.socket.once('drain', pump);
    };
    pump();
    await closed;
    await waitFor(() => chain.clusters.a.target.openUpgrades() === before);
    expect(bounded.logs.some((l) => l.includes('"end":"client_stalled"'))).toBe(true);
  });

  test('a session with no bytes either way for --upgrade-idle-timeout is closed cleanly; traffic keeps it open', async () => {
    const up = await rawUpgrade(bounded.port, `/cluster-a${EXEC}`);
    expect(up.status).toBe(101);
    const ending = readToEnd(up.socket, up.rest);
    const started = Date.now();
    // Traffic every 500 ms for 2.5 s: longer than the idle timeout in all, never idle for that long.
    for (let i = 0; i < 5; i++) {
      up.socket.write(`ping ${i};`);
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(up.socket.destroyed).toBe(false);
    const { data, ended } = await ending;
    expect(ended).toBe(true);
    expect(data.toString()).toBe('ping 0;ping 1;ping 2;ping 3;ping 4;');
    expect(Date.now() - started).toBeGreaterThanOrEqual(2500);
    await waitFor(() => bounded.logs.some((l) => l.includes('"end":"idle"')));
  });

  test('closeAll ends open sessions cleanly and answers 503 to one still waiting for its 101', async () => {
    const open = await rawUpgrade(bounded.port, `/cluster-a${EXEC}`);
    expect(open.status).toBe(101);
    const openEnd = readToEnd(open.socket, open.rest);
    const waiting = rawUpgrade(bounded.port, '/1-cluster-b/upgrade/hang');
    await waitFor(() => bounded.server.upgrades.open === 2);
    await bounded.server.upgrades.closeAll();
    expect((await openEnd).ended).toBe(true);
    const w = await waiting;
    expect(w.status).toBe(503);
    expect(JSON.parse((await readToEnd(w.socket, w.rest)).data.toString())).toMatchObject({ code: 503, reason: 'ServiceUnavailable' });
  });
});
