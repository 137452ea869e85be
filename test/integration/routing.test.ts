import { describe, expect, test } from 'vitest';
import { anpMode, frontendTunnels } from '../harness/anp.ts';
import { type Chain, type RunningUserServer, useChain } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';

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
