import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { anpMode, frontendTunnels } from '../harness/anp.ts';
import { type Chain, type RunningUserServer, useChain } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';
import { rawH2Request } from '../harness/raw-h2.ts';

// Routing through the real chain: user-server -> ANP proxy-server -> agent -> service-proxy double -> target.
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
useChain((c) => ({ chain, us, ca } = c));

const lastReceived = (c: 'a' | 'b') => chain.clusters[c].serviceProxy.received.at(-1)!;

describe('frontend mode', () => {
  test('the proxy-server and the user-server speak the mode of this project (ANP_MODE), and only that one', async () => {
    expect(chain.mode).toBe(anpMode());
    expect(us.config.proxyMode).toBe(chain.mode);
    expect((await h1(us.port, ca, '/cluster-a/api')).status).toBe(200);
    // The pooled tunnel stays open at ANP, counted under this mode's frontend only.
    const metrics = await chain.anp.metrics();
    expect(frontendTunnels(metrics, chain.mode)).toBeGreaterThanOrEqual(1);
    expect(frontendTunnels(metrics, chain.mode === 'grpc' ? 'http-connect' : 'grpc')).toBe(0);
  });
});

describe('cluster selection', () => {
  test('each cluster name reaches its own cluster, over HTTP/1.1 and HTTP/2', async () => {
    for (const client of [h1, h2]) {
      const a = await client(us.port, ca, '/cluster-a/api/v1/namespaces');
      const b = await client(us.port, ca, '/1-cluster-b/api/v1/namespaces');
      expect(a.status).toBe(200);
      expect(b.status).toBe(200);
      expect(a.json().cluster).toBe('cluster-a');
      expect(b.json().cluster).toBe('1-cluster-b');
    }
  });

  test('the front negotiates h2 with clients that offer it and http/1.1 with those that do not', async () => {
    expect((await h2(us.port, ca, '/cluster-a/version')).httpVersion).toBe('2.0');
    expect((await h1(us.port, ca, '/cluster-a/version')).httpVersion).toBe('1.1');
  });
});

describe('path and query', () => {
  test('percent-escapes, dot segments, semicolons and the query arrive byte for byte', async () => {
    const rest = '/api/v1/namespaces/default/pods/a%2Fb/log;x=1?follow=false&x=%2F&labelSelector=app%3Dweb,tier+in+(a%2Cb)&q=%7C|&e=%E2%9C%93&sp=a%20b';
    for (const client of [h1, h2]) {
      const r = await client(us.port, ca, `/cluster-a${rest}`);
      expect(r.status).toBe(200);
      expect(r.json().url).toBe(rest);
    }
    const odd = '/api//v1/./x/../y%252Fz?';
    expect((await h1(us.port, ca, `/cluster-a${odd}`)).json().url).toBe(odd);
  });

  test('/<cluster>/ goes upstream as /', async () => {
    const r = await h1(us.port, ca, '/cluster-a/');
    expect(r.json().url).toBe('/');
  });

  test.each([
    ['/', 'BAD_PATH'],
    ['/cluster-a', 'BAD_PATH'],
    ['/cluster-a?x=/y', 'BAD_PATH'],
    ['/Cluster-A/api', 'INVALID_CLUSTER_NAME'],
    ['/clu%73ter-a/api', 'INVALID_CLUSTER_NAME'],
    ['//api/v1/pods', 'INVALID_CLUSTER_NAME'],
    [`/${'a'.repeat(254)}/api`, 'INVALID_CLUSTER_NAME'],
    ['/cluster-a/api/v1/namespaces/ns/services/svc/proxy-service/x', 'INVALID_SERVICE'],
  ])('%s gets a 400 Status and dials nothing', async (path) => {
    const before = await us.server.metrics.successfulDials();
    const received = chain.clusters.a.serviceProxy.received.length;
    for (const client of [h1, h2]) {
      const r = await client(us.port, ca, path);
      expect(r.status).toBe(400);
      expect(r.headers['content-type']).toBe('application/json');
      const s = r.json();
      expect(s).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 400, reason: 'BadRequest' });
      expect(s.message.length).toBeGreaterThan(10);
    }
    expect(await us.server.metrics.successfulDials()).toBe(before);
    expect(chain.clusters.a.serviceProxy.received.length).toBe(received);
  });
});

describe('headers', () => {
  test('kube requests carry the kube-apiserver target and the client cannot override it', async () => {
    const r = await h1(us.port, ca, '/cluster-a/api/v1/pods', {
      headers: { 'Cluster-Proxy-Service': 'evil', 'cluster-proxy-namespace': 'kube-system', 'Cluster-Proxy-Port': '1', 'Cluster-Proxy-Proto': 'http' },
    });
    expect(r.status).toBe(200);
    const h = lastReceived('a').headers;
    expect([h['cluster-proxy-proto'], h['cluster-proxy-namespace'], h['cluster-proxy-service'], h['cluster-proxy-port']]).toEqual(['https', 'default', 'kubernetes', '443']);
  });

  test('service requests get the four Cluster-Proxy headers and the path after proxy-service', async () => {
    const r = await h1(us.port, ca, '/cluster-a/api/v1/namespaces/tools/services/echo:8443/proxy-service/metrics/x%2Fy?query=up&a=/b', {
      headers: { 'cluster-proxy-service': 'evil' },
    });
    expect(r.status).toBe(200);
    expect(r.json().url).toBe('/metrics/x%2Fy?query=up&a=/b');
    const h = lastReceived('a').headers;
    expect([h['cluster-proxy-proto'], h['cluster-proxy-namespace'], h['cluster-proxy-service'], h['cluster-proxy-port']]).toEqual(['https', 'tools', 'echo', '8443']);
    const plain = await h1(us.port, ca, '/cluster-a/api/v1/namespaces/tools/services/http:plain:8080/proxy-service/');
    expect(plain.json().url).toBe('/');
    expect(lastReceived('a').headers['cluster-proxy-proto']).toBe('http');
  });

  test('a service the service-proxy cannot reach gives its own 502 through untouched', async () => {
    const r = await h1(us.port, ca, '/cluster-a/api/v1/namespaces/tools/services/missing:80/proxy-service/x');
    expect(r.status).toBe(502);
    expect(r.body.length).toBe(0);
  });

  test('end-to-end headers pass, hop-by-hop headers are dropped, Host is kept, X-Forwarded-For is appended', async () => {
    const r = await h1(us.port, ca, '/cluster-a/api/v1/pods', {
      headers: {
        Authorization: 'Bearer secret-token-value',
        'Impersonate-User': 'alice',
        'Impersonate-Group': ['g1', 'g2'],
        Connection: 'keep-alive, X-Hop',
        'X-Hop': 'drop me',
        'Keep-Alive': 'timeout=5',
        'Proxy-Connection': 'keep-alive',
        'Proxy-Authorization': 'Basic xyz',
        'X-Forwarded-For': '10.1.2.3',
        'X-Custom': 'kept',
      },
    });
    expect(r.status).toBe(200);
    const got = lastReceived('a');
    expect(got.headers.authorization).toBe('Bearer secret-token-value');
    expect(got.headers['impersonate-user']).toBe('alice');
    expect(got.rawHeaders.filter((_v, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === 'impersonate-group')).toEqual(['g1', 'g2']);
    expect(got.headers['x-custom']).toBe('kept');
    expect(got.headers['x-hop']).toBeUndefined();
    expect(got.headers['keep-alive']).toBeUndefined();
    expect(got.headers['proxy-connection']).toBeUndefined();
    expect(got.headers['proxy-authorization']).toBeUndefined();
    expect(got.headers.host).toBe(`127.0.0.1:${us.port}`);
    expect(got.headers['x-forwarded-for']).toBe('10.1.2.3, 127.0.0.1');
    // The access log has the request, never its token.
    expect(us.logs.join('\n')).toContain('"path":"/api/v1/pods"');
    expect(us.logs.join('\n')).not.toContain('secret-token-value');
  });

  test('HTTP/2 :authority becomes Host upstream', async () => {
    await h2(us.port, ca, '/1-cluster-b/api');
    expect(lastReceived('b').headers.host).toBe(`localhost:${us.port}`);
  });

  test('upstream statuses, bodies and duplicate response headers pass through as they are', async () => {
    const denied = await h1(us.port, ca, '/cluster-a/status/401');
    expect(denied.status).toBe(401);
    expect(denied.json()).toMatchObject({ kind: 'Status', code: 401, message: 'target of cluster-a says 401' });
    const forbidden = await h2(us.port, ca, '/1-cluster-b/status/403');
    expect(forbidden.status).toBe(403);
    expect(forbidden.json().message).toBe('target of 1-cluster-b says 403');
    const ok = await h1(us.port, ca, '/cluster-a/api');
    expect(ok.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(ok.headers['x-cluster']).toBe('cluster-a');
  });
});

describe('bad input harms nothing else', () => {
  test('a 30 KiB header (a long OIDC token) is accepted; a 100 KiB one gets a 431 Status over HTTP/1.1', async () => {
    const long = await h1(us.port, ca, '/cluster-a/api', { headers: { authorization: `Bearer ${'x'.repeat(30 * 1024)}` } });
    expect(long.status).toBe(200);
    const huge = await h1(us.port, ca, '/cluster-a/api', { headers: { 'x-big': 'y'.repeat(100 * 1024) } });
    expect(huge.status).toBe(431);
    expect(huge.json()).toMatchObject({ kind: 'Status', code: 431 });
    expect((await h1(us.port, ca, '/cluster-a/api')).status).toBe(200);
  });
});

/** An HTTP/1.1 request written by hand (Node's client merges or refuses what these tests send), read to the close. */
function rawH1(port: number, head: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => socket.write(`${head}Connection: close\r\n\r\n`));
    let data = '';
    socket.on('data', (c: Buffer) => (data += c.toString('latin1')));
    socket.once('error', reject);
    socket.once('close', () => {
      const end = data.indexOf('\r\n\r\n');
      resolve({ status: Number(data.slice(9, 12)), head: data.slice(0, end), body: data.slice(end + 4) });
    });
  });
}

const KUBE = '/cluster-a/api/v1/namespaces/default/pods';

describe('identity headers', () => {
  test.each([
    ['two Authorization headers, different case', 'Authorization: Bearer first\r\nAUTHORIZATION: Bearer second\r\n', /2 Authorization headers/],
    ['two Authorization headers, same case', 'authorization: Bearer first\r\nauthorization: Bearer second\r\n', /2 Authorization headers/],
    ['a second Host header', 'hOsT: evil.example\r\n', /2 Host headers/],
  ])('HTTP/1.1 with %s: 400 Status, nothing forwarded, neither value chosen', async (_name, extra, message) => {
    const received = chain.clusters.a.serviceProxy.received.length;
    const r = await rawH1(us.port, `GET ${KUBE} HTTP/1.1\r\nHost: localhost:${us.port}\r\nX-Request-Id: dup-h1\r\n${extra}`);
    expect(r.status).toBe(400);
    expect(r.head).toMatch(/\r\nx-request-id: dup-h1/i);
    expect(JSON.parse(r.body)).toMatchObject({ kind: 'Status', code: 400, reason: 'BadRequest', message: expect.stringMatching(message) });
    expect(chain.clusters.a.serviceProxy.received.length).toBe(received);
    expect(us.logs.some((l) => l.includes('"error":"DUPLICATE_IDENTITY_HEADER"'))).toBe(true);
  });

  test.each([
    ['two authorization fields', [['authorization', 'Bearer first'], ['authorization', 'Bearer second']]],
    ['a host field that disagrees with :authority', [['host', 'evil.example']]],
    ['two :authority fields', [[':authority', 'evil.example']]],
  ] as const)('HTTP/2 with %s: 400 Status (or the stream refused), nothing forwarded', async (_name, extra) => {
    const received = chain.clusters.a.serviceProxy.received.length;
    const r = await rawH2Request(us.port, ca, [[':method', 'GET'], [':scheme', 'https'], [':path', KUBE], [':authority', `localhost:${us.port}`], ...extra]);
    // nghttp2 itself resets a stream with a repeated pseudo-header (PROTOCOL_ERROR); the rest are ours to answer.
    if (r.reset !== undefined) expect(r.reset).toBe(1);
    else expect(JSON.parse(r.body)).toMatchObject({ kind: 'Status', code: 400, reason: 'BadRequest' });
    if (extra[0]![0] !== ':authority') expect(r.reset).toBeUndefined();
    expect(chain.clusters.a.serviceProxy.received.length).toBe(received);
  });

  test('HTTP/2 with a host field equal to :authority is fine', async () => {
    const r = await rawH2Request(us.port, ca, [[':method', 'GET'], [':scheme', 'https'], [':path', KUBE], [':authority', `localhost:${us.port}`], ['host', `localhost:${us.port}`]]);
    expect(JSON.parse(r.body)).toMatchObject({ cluster: 'cluster-a' });
  });

  test('names a client lists in Connection never remove the Cluster-Proxy-* headers or X-Forwarded-For the proxy sets', async () => {
    const connection = 'keep-alive, Cluster-Proxy-Service, cluster-proxy-namespace, CLUSTER-PROXY-PORT, Cluster-Proxy-Proto, X-Forwarded-For, Host';
    for (const target of [KUBE, '/cluster-a/api/v1/namespaces/tools/services/echo:8443/proxy-service/x']) {
      const r = await h1(us.port, ca, target, { headers: { Connection: connection, 'Cluster-Proxy-Service': 'evil', 'X-Forwarded-For': '10.9.9.9' } });
      expect(r.status).toBe(200);
      const h = lastReceived('a').headers;
      const expected = target === KUBE ? ['https', 'default', 'kubernetes', '443'] : ['https', 'tools', 'echo', '8443'];
      expect([h['cluster-proxy-proto'], h['cluster-proxy-namespace'], h['cluster-proxy-service'], h['cluster-proxy-port']]).toEqual(expected);
      expect(h['x-forwarded-for']).toBe('127.0.0.1');
      expect(h.host).toBe(`127.0.0.1:${us.port}`);
    }
  });
});

describe('--impersonation', () => {
  const IMPERSONATE = { 'Impersonate-User': 'alice', 'impersonate-group': 'admins', 'IMPERSONATE-UID': 'u-1', 'Impersonate-Extra-Scopes': 'view' };
  let strip: RunningUserServer;
  let refuse: RunningUserServer;
  beforeAll(async () => {
    strip = await chain.startUserServer({ impersonation: 'strip' });
    refuse = await chain.startUserServer({ impersonation: 'refuse' });
  });
  afterAll(async () => {
    await strip?.close();
    await refuse?.close();
  });

  test('pass (the default): every Impersonate-* header reaches the managed cluster, as kubectl --as needs', async () => {
    expect(us.config.impersonation).toBe('pass');
    for (const client of [h1, h2]) {
      expect((await client(us.port, ca, KUBE, { headers: IMPERSONATE })).status).toBe(200);
      const h = lastReceived('a').headers;
      expect([h['impersonate-user'], h['impersonate-group'], h['impersonate-uid'], h['impersonate-extra-scopes']]).toEqual(['alice', 'admins', 'u-1', 'view']);
    }
  });

  test('strip: the request goes on without any Impersonate-* header', async () => {
    for (const client of [h1, h2]) {
      const r = await client(strip.port, ca, KUBE, { headers: { ...IMPERSONATE, Authorization: 'Bearer kept' } });
      expect(r.status).toBe(200);
      const got = lastReceived('a');
      expect(got.rawHeaders.filter((_v, i) => i % 2 === 0 && /^impersonate-/i.test(got.rawHeaders[i]!))).toEqual([]);
      expect(got.headers.authorization).toBe('Bearer kept');
    }
  });

  test.each(Object.keys(IMPERSONATE))('refuse: a request with %s gets 403 Status and is not forwarded', async (name) => {
    const received = chain.clusters.a.serviceProxy.received.length;
    for (const client of [h1, h2]) {
      const r = await client(refuse.port, ca, KUBE, { headers: { [name]: 'x' } });
      expect(r.status).toBe(403);
      expect(r.json()).toMatchObject({ kind: 'Status', code: 403, reason: 'Forbidden', message: expect.stringContaining('--impersonation=refuse') });
    }
    expect(chain.clusters.a.serviceProxy.received.length).toBe(received);
    expect((await h1(refuse.port, ca, KUBE)).status).toBe(200);
  });
});

describe('exposed services allowlist (CVE-2026-66794)', () => {
  const svc = (ns: string, name: string): string => `/cluster-a/api/v1/namespaces/${ns}/services/${name}/proxy-service/x`;

  test.each([
    ['a Service not listed', svc('tools', 'secret:8443'), 'tools/secret'],
    ['a listed Service on another port', svc('tools', 'echo:9443'), 'tools/echo'],
    ['a listed Service in another namespace', svc('kube-system', 'echo:8443'), 'kube-system/echo'],
    ['a listed Service over another protocol', svc('tools', 'http:echo:8443'), 'tools/echo'],
  ])('%s: 403 Status like OCM, nothing dialled', async (_name, target, name) => {
    const dials = await us.server.metrics.successfulDials();
    const received = chain.clusters.a.serviceProxy.received.length;
    for (const client of [h1, h2]) {
      const r = await client(us.port, ca, target);
      expect(r.status).toBe(403);
      expect(r.json()).toMatchObject({ kind: 'Status', code: 403, reason: 'Forbidden', message: `service ${name} is not in the exposed services allowlist` });
    }
    expect(await us.server.metrics.successfulDials()).toBe(dials);
    expect(chain.clusters.a.serviceProxy.received.length).toBe(received);
  });

  test('listed Services pass; an entry without a port or protocol matches any; kube-apiserver paths are exempt', async () => {
    expect((await h1(us.port, ca, svc('tools', 'echo:8443'))).status).toBe(200);
    expect((await h2(us.port, ca, svc('tools', 'http:plain:8080'))).status).toBe(200);
    // tools/missing is listed without port: it reaches the service-proxy, which cannot reach it (502, its own).
    for (const port of ['80', '81']) {
      const r = await h1(us.port, ca, svc('tools', `missing:${port}`));
      expect(r.status).toBe(502);
      expect(lastReceived('a').headers['cluster-proxy-port']).toBe(port);
    }
    expect((await h1(us.port, ca, '/cluster-a/api/v1/namespaces/kube-system/services/x/proxy')).status).toBe(200);
  });

  test('without --exposed-services-file every Service is denied and kube-apiserver paths still work', async () => {
    const none = await chain.startUserServer({ 'exposed-services-file': '' });
    try {
      expect(none.config.exposedServicesFile).toBeUndefined();
      expect((await h1(none.port, ca, svc('tools', 'echo:8443'))).status).toBe(403);
      expect((await h1(none.port, ca, KUBE)).status).toBe(200);
    } finally {
      await none.close();
    }
  });

  test('a ConfigMap volume: ..data swaps are picked up, a malformed list keeps the last good one, deletion denies all', async () => {
    // The layout the kubelet makes: <dir>/services -> ..data/services, ..data -> ..<timestamp>/
    const dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-exposed-'));
    let generation = 0;
    const publish = (text: string): void => {
      const real = `..gen${++generation}`;
      mkdirSync(path.join(dir, real));
      writeFileSync(path.join(dir, real, 'services'), text);
      symlinkSync(real, path.join(dir, '..data_tmp'));
      renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    };
    publish('- namespace: tools\n  service: echo\n');
    symlinkSync('..data/services', path.join(dir, 'services'));
    const watched = await chain.startUserServer({ 'exposed-services-file': path.join(dir, 'services'), 'tls-reload-interval': '0' });
    const status = async (target: string): Promise<number> => (await h1(watched.port, ca, target)).status;
    const until = async (target: string, want: number): Promise<void> => {
      await expect.poll(() => status(target), { timeout: 10_000, interval: 100 }).toBe(want);
    };
    try {
      expect(await status(svc('tools', 'echo:8443'))).toBe(200);
      expect(await status(svc('tools', 'http:plain:8080'))).toBe(403);

      publish('- namespace: tools\n  service: plain\n  port: 8080\n');
      await until(svc('tools', 'http:plain:8080'), 200);
      expect(await status(svc('tools', 'echo:8443'))).toBe(403);

      publish('- namespace: tools\n  service: echo\n  prot: https\n');
      await expect.poll(() => watched.logs.some((l) => l.includes('exposed-services file is invalid') && l.includes('unknown field \\"prot\\"')), { timeout: 10_000 }).toBe(true);
      expect(await status(svc('tools', 'http:plain:8080'))).toBe(200);
      expect(await status(svc('tools', 'echo:8443'))).toBe(403);

      // An optional ConfigMap volume whose ConfigMap is deleted loses its files.
      rmSync(path.join(dir, '..data'));
      await until(svc('tools', 'http:plain:8080'), 403);
      expect(await status(KUBE)).toBe(200);
    } finally {
      await watched.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
