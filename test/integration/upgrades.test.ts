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
    // The session's line is written once both sides are torn down, which may follow the target's close.
    await waitFor(() => bounded.logs.some((l) => l.includes('"end":"client_stalled"')));
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

describe('upgrades pass the same admission as plain requests', () => {
  test('a Service not on the exposed-services allowlist: 403 Status with X-Request-Id, nothing dialled', async () => {
    const dials = await us.server.metrics.successfulDials();
    const up = await rawUpgrade(us.port, '/cluster-a/api/v1/namespaces/tools/services/secret:8443/proxy-service/exec', { headers: ['X-Request-Id: up-403'] });
    expect(up.status).toBe(403);
    expect(up.head).toMatch(/\r\nx-request-id: up-403/i);
    const { data } = await readToEnd(up.socket, up.rest);
    expect(JSON.parse(data.toString())).toMatchObject({ kind: 'Status', code: 403, message: 'service tools/secret is not in the exposed services allowlist' });
    expect(await us.server.metrics.successfulDials()).toBe(dials);
  });

  test('two Authorization headers: 400 Status, nothing dialled', async () => {
    const dials = await us.server.metrics.successfulDials();
    const up = await rawUpgrade(us.port, `/cluster-a${EXEC}`, { headers: ['authorization: Bearer other'] });
    expect(up.status).toBe(400);
    expect(JSON.parse((await readToEnd(up.socket, up.rest)).data.toString())).toMatchObject({ kind: 'Status', code: 400, message: expect.stringMatching(/2 Authorization headers/) });
    expect(await us.server.metrics.successfulDials()).toBe(dials);
  });

  test('--impersonation=refuse answers 403 to an upgrade with Impersonate-User; strip drops it', async () => {
    const refuse = await chain.startUserServer({ impersonation: 'refuse' });
    const strip = await chain.startUserServer({ impersonation: 'strip' });
    try {
      const refused = await rawUpgrade(refuse.port, `/cluster-a${EXEC}`, { headers: ['Impersonate-User: alice'] });
      expect(refused.status).toBe(403);
      expect(JSON.parse((await readToEnd(refused.socket, refused.rest)).data.toString())).toMatchObject({ code: 403, reason: 'Forbidden' });
      const stripped = await rawUpgrade(strip.port, `/cluster-a${EXEC}`, { headers: ['Impersonate-User: alice', 'Impersonate-Group: admins'] });
      expect(stripped.status).toBe(101);
      const seen = chain.clusters.a.serviceProxy.received.findLast((r) => r.url === EXEC)!;
      expect(seen.headers['impersonate-user']).toBeUndefined();
      expect(seen.headers['impersonate-group']).toBeUndefined();
      stripped.socket.destroy();
    } finally {
      await refuse.close();
      await strip.close();
    }
  });

  test('names listed in Connection never remove the Cluster-Proxy-* headers the proxy sets', async () => {
    const up = await rawUpgrade(us.port, `/cluster-a${EXEC}`, { headers: ['Connection: Cluster-Proxy-Service, Cluster-Proxy-Port', 'Cluster-Proxy-Service: evil'] });
    expect(up.status).toBe(101);
    const seen = chain.clusters.a.serviceProxy.received.findLast((r) => r.url === EXEC)!;
    expect([seen.headers['cluster-proxy-proto'], seen.headers['cluster-proxy-namespace'], seen.headers['cluster-proxy-service'], seen.headers['cluster-proxy-port']]).toEqual(['https', 'default', 'kubernetes', '443']);
    up.socket.destroy();
  });

  test('one access line per upgrade, with the fields of the plain path', async () => {
    const up = await rawUpgrade(us.port, `/cluster-a${EXEC}`, { headers: ['X-Request-Id: up-line'] });
    expect(up.status).toBe(101);
    up.socket.destroy();
    await waitFor(() => us.logs.some((l) => l.includes('"reqId":"up-line"')));
    const line = JSON.parse(us.logs.find((l) => l.includes('"reqId":"up-line"'))!);
    expect(line).toMatchObject({ msg: 'upgrade', cluster: 'cluster-a', kind: 'upgrade', protocol: 'SPDY/3.1', method: 'POST', status: 101, verb: 'create', resource: 'pods', subresource: 'exec' });
  });
});

describe('what the managed cluster answers to an upgrade', () => {
  test('the 101 and every proxy-made answer carry X-Request-Id', async () => {
    const ok = await rawUpgrade(us.port, `/cluster-a${EXEC}`, { headers: ['X-Request-Id: up-101'] });
    expect(ok.status).toBe(101);
    expect(ok.head).toMatch(/\r\nx-request-id: up-101\r\n/i);
    ok.socket.destroy();
    for (const [target, status] of [[`/Bad_Name${EXEC}`, 400], [`/no-such-cluster${EXEC}`, 503]] as const) {
      const up = await rawUpgrade(us.port, target, { headers: [`X-Request-Id: up-${status}`] });
      expect(up.status).toBe(status);
      expect(up.head).toMatch(new RegExp(`\\r\\nx-request-id: up-${status}(\\r\\n|$)`, 'i'));
      up.socket.destroy();
    }
  });

  test.each([
    ['another protocol than the one requested', 'websocket'],
    ['no protocol at all', ''],
  ])('a 101 naming %s: 502 Status, the tunnel closed', async (_name, to) => {
    const before = chain.clusters.a.target.openUpgrades();
    const up = await rawUpgrade(us.port, `/cluster-a/upgrade/switch?to=${to}`, { headers: ['X-Request-Id: up-mismatch'] });
    expect(up.status).toBe(502);
    expect(up.head).toMatch(/\r\nx-request-id: up-mismatch/i);
    const { data } = await readToEnd(up.socket, up.rest);
    expect(JSON.parse(data.toString())).toMatchObject({ kind: 'Status', code: 502, reason: 'BadGateway', message: expect.stringContaining(`switched protocols to "${to}" when "SPDY/3.1" was requested`) });
    await waitFor(() => chain.clusters.a.target.openUpgrades() === before);
    expect(us.logs.some((l) => l.includes('"error":"UPGRADE_PROTOCOL_MISMATCH"'))).toBe(true);
  });

  test('the same protocol in another case is accepted, as Go compares it', async () => {
    const up = await rawUpgrade(us.port, '/cluster-a/upgrade/switch?to=spdy/3.1');
    expect(up.status).toBe(101);
    up.socket.destroy();
  });

  test.each([403, 500])('a refusal with %i is relayed with its body and X-Request-Id, and its tunnel destroyed, never reused', async (code) => {
    const before = chain.clusters.a.target.openUpgrades();
    const tunnels = async (): Promise<number> => metricValue(await us.server.metrics.registry.metrics(), 'cluster_proxy_user_server_tunnels_open');
    const tunnelsBefore = await tunnels();
    const dials = await us.server.metrics.successfulDials();
    const up = await rawUpgrade(us.port, `/cluster-a/upgrade/refuse?status=${code}`, { headers: [`X-Request-Id: refused-${code}`] });
    expect(up.status).toBe(code);
    expect(up.head).toMatch(new RegExp(`\\r\\nx-request-id: refused-${code}(\\r\\n|$)`, 'i'));
    expect(up.head).not.toContain('from-the-cluster');
    const { data } = await readToEnd(up.socket, up.rest);
    expect(JSON.parse(data.toString())).toMatchObject({ kind: 'Status', code, message: 'upgrade refused by cluster-a' });
    // The managed side kept its connection open: only the proxy destroying the tunnel closes it.
    await waitFor(() => chain.clusters.a.target.openUpgrades() === before);
    await waitFor(async () => (await tunnels()) <= tunnelsBefore);
    expect(await us.server.metrics.successfulDials()).toBe(dials + 1);
    const next = await rawUpgrade(us.port, `/cluster-a${EXEC}`);
    expect(next.status).toBe(101);
    expect(await us.server.metrics.successfulDials()).toBe(dials + 2);
    next.socket.destroy();
  });
});
