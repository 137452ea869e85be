import type { AddressInfo } from 'node:net';
import type http from 'node:http';
import https from 'node:https';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createHealthServer, listenHealth } from '../../src/health/health-server.ts';
import { metricValue } from '../harness/anp.ts';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';

// Access logs, request ids, redaction and metrics through the real chain (ANP proxy-server and agents).
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
let health: http.Server;
let healthPort: number;
beforeAll(async () => {
  // destHost only: a cluster without an agent gets ANP's "No agent available" (503).
  chain = await startChain({ strategies: 'destHost' });
  us = await chain.startUserServer({ 'metrics-cluster-labels': '1' });
  ca = chain.certs.read('ca.crt');
  health = createHealthServer({ ready: us.server.ready, draining: () => us.server.drain.draining }, us.server.metrics.registry);
  healthPort = (await listenHealth(health, '127.0.0.1', 0) as AddressInfo).port;
});
afterAll(async () => {
  health?.close();
  await us?.close();
  await chain?.close();
});

const TOKENS = {
  authorization: 'authz-SECRET-1111',
  cookie: 'cookie-SECRET-2222',
  query: 'query-SECRET-3333',
  remote: 'remote-SECRET-4444',
  body: 'body-SECRET-5555',
};
const planted = { Authorization: `Bearer ${TOKENS.authorization}`, Cookie: `session=${TOKENS.cookie}`, 'X-Remote-Token': TOKENS.remote };
const accessLines = (): Record<string, any>[] => us.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request' || l.msg === 'request failed' || l.msg === 'rejected');
const lineFor = (reqId: string): Record<string, any> => {
  const line = accessLines().find((l) => l.reqId === reqId);
  expect(line, `access line for ${reqId}`).toBeDefined();
  return line!;
};

describe('access log', () => {
  test.each([
    ['GET', '/api/v1/namespaces/default/pods?limit=5', { verb: 'list', resource: 'pods', namespace: 'default', path: '/api/v1/namespaces/default/pods' }],
    ['GET', '/api/v1/namespaces/default/pods/p1', { verb: 'get', resource: 'pods', namespace: 'default', name: 'p1' }],
    ['GET', '/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=1', { verb: 'watch', resource: 'configmaps', namespace: 'default', kind: 'kube-stream' }],
    ['GET', '/api/v1/namespaces/default/pods/p1/log?container=c', { verb: 'get', resource: 'pods', subresource: 'log', name: 'p1' }],
    ['GET', '/api/v1/namespaces/default/pods/p1/slow/log?follow=true&chunks=2&interval=10', { verb: 'get', resource: 'pods', subresource: 'slow', name: 'p1', kind: 'kube-stream' }],
    ['POST', '/apis/apps/v1/namespaces/ns1/deployments', { verb: 'create', apiGroup: 'apps', resource: 'deployments', namespace: 'ns1' }],
    ['DELETE', '/apis/apps/v1/namespaces/ns1/deployments', { verb: 'deletecollection', apiGroup: 'apps', resource: 'deployments' }],
    ['PATCH', '/apis/apps/v1/namespaces/ns1/deployments/d1/scale', { verb: 'patch', resource: 'deployments', subresource: 'scale', name: 'd1' }],
    ['GET', '/version', { verb: 'get', path: '/version' }],
  ] as const)('%s %s: one line with the apiserver view of the request', async (method, rest, expected) => {
    const r = await h1(us.port, ca, `/cluster-a${rest}`, { method, headers: { 'x-request-id': `t-${method}-${rest.length}` } });
    expect(r.status).toBe(200);
    expect(r.headers['x-request-id']).toBe(`t-${method}-${rest.length}`);
    const line = lineFor(`t-${method}-${rest.length}`);
    expect(line).toMatchObject({ cluster: 'cluster-a', method, status: 200, kind: 'kube', ...(expected as object) });
    expect(line.path).not.toContain('?');
    expect(line.bytes).toBe(r.body.length);
    expect(typeof line.durationMs).toBe('number');
  });

  test('service requests carry no Kubernetes verb', async () => {
    const r = await h2(us.port, ca, '/cluster-a/api/v1/namespaces/tools/services/echo:8443/proxy-service/metrics?x=1', { headers: { 'x-request-id': 'svc-1' } });
    expect(r.status).toBe(200);
    const line = lineFor('svc-1');
    expect(line).toMatchObject({ kind: 'service', path: '/metrics', status: 200 });
    expect(line.verb).toBeUndefined();
  });

  test('a usable X-Request-Id is kept; anything else is replaced by a generated id, returned too', async () => {
    const bad = await h1(us.port, ca, '/cluster-a/api/v1/pods', { headers: { 'x-request-id': 'has spaces and "quotes"' } });
    const generated = bad.headers['x-request-id'] as string;
    expect(generated).toMatch(/^[0-9a-f]{12}-[0-9a-z]+$/);
    expect(lineFor(generated).path).toBe('/api/v1/pods');
    const none = await h1(us.port, ca, '/cluster-a/api/v1/pods');
    expect(none.headers['x-request-id']).not.toBe(generated);
    // Proxy-made answers carry it as well.
    const rejected = await h1(us.port, ca, '/Bad/api', { headers: { 'x-request-id': 'rej-1' } });
    expect(rejected.status).toBe(400);
    expect(rejected.headers['x-request-id']).toBe('rej-1');
    expect(lineFor('rej-1')).toMatchObject({ status: 400, error: 'INVALID_CLUSTER_NAME' });
  });
});

describe('redaction', () => {
  test('tokens in Authorization, Cookie, X-Remote-Token and the query never reach any log line', async () => {
    const q = `access_token=${TOKENS.query}&token=${TOKENS.query}`;
    const statuses: number[] = [];
    for (const client of [h1, h2]) {
      statuses.push((await client(us.port, ca, `/cluster-a/api/v1/namespaces/default/pods?${q}`, { headers: planted })).status);
      statuses.push((await client(us.port, ca, `/1-cluster-b/api/v1/namespaces/tools/services/echo:8443/proxy-service/x?${q}`, { headers: planted })).status);
      // Failures log at warn with the error: no agent (503), agent dial refused (502), bad path (400).
      statuses.push((await client(us.port, ca, `/no-agent-here/api/v1/pods?${q}`, { headers: planted })).status);
      statuses.push((await client(us.port, ca, `/${chain.refusedCluster}/api/v1/pods?${q}`, { headers: planted })).status);
      statuses.push((await client(us.port, ca, `/cluster-a?${q}`, { headers: planted })).status);
      statuses.push((await client(us.port, ca, `/cluster-a/api/v1/namespaces/ns/services/x:0/proxy-service/?${q}`, { headers: planted })).status);
    }
    // A request body and a client that goes away mid-stream.
    statuses.push((await h1(us.port, ca, `/cluster-a/echo-sha?${q}`, { method: 'POST', headers: planted, body: TOKENS.body })).status);
    await new Promise<void>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: us.port, path: `/cluster-a/slow?watch=true&chunks=50&interval=50&${q}`, headers: planted, ca, servername: 'localhost', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
      req.once('error', reject);
      req.end();
    });
    expect(statuses).toEqual([200, 200, 503, 502, 400, 400, 200, 200, 503, 502, 400, 400, 200]);
    await waitFor(() => accessLines().some((l) => l.clientGone === true));
    const all = us.logs.join('\n');
    expect(all).toContain('"status":503');
    for (const secret of Object.values(TOKENS)) expect(all).not.toContain(secret);
  });
});

describe('metrics', () => {
  test('/metrics after traffic: requests by class, method and kind, dials, latencies, tunnels, bounded cluster label', async () => {
    await h1(us.port, ca, '/cluster-a/api/v1/pods');
    await h1(us.port, ca, '/1-cluster-b/api/v1/pods');
    await h1(us.port, ca, '/no-agent-here/api/v1/pods');
    const res = await fetch(`http://127.0.0.1:${healthPort}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const sample = (name: string, labels: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    const P = 'cluster_proxy_user_server_';
    expect(sample(`${P}requests_total`, 'code="2xx",method="GET",kind="kube"')).toBeGreaterThanOrEqual(5);
    expect(sample(`${P}requests_total`, 'code="2xx",method="POST",kind="kube"')).toBeGreaterThanOrEqual(1);
    expect(sample(`${P}requests_total`, 'code="2xx",method="GET",kind="service"')).toBeGreaterThanOrEqual(1);
    expect(sample(`${P}requests_total`, 'code="5xx",method="GET",kind="kube"')).toBeGreaterThanOrEqual(2);
    expect(sample(`${P}requests_total`, 'code="4xx",method="GET",kind="invalid"')).toBeGreaterThanOrEqual(1);
    expect(sample(`${P}tunnel_dials_total`, 'outcome="success"')).toBeGreaterThanOrEqual(2);
    expect(sample(`${P}tunnel_dials_total`, 'outcome="agent_unavailable"')).toBeGreaterThanOrEqual(1);
    expect(sample(`${P}tunnel_dials_total`, 'outcome="agent_dial_failed"')).toBeGreaterThanOrEqual(1);
    expect(metricValue(text, `${P}tunnel_connect_seconds_count`)).toBeGreaterThanOrEqual(3);
    expect(metricValue(text, `${P}tunnel_tls_seconds_count`)).toBeGreaterThanOrEqual(2);
    expect(sample(`${P}time_to_first_byte_seconds_count`, 'kind="kube"')).toBeGreaterThanOrEqual(5);
    expect(sample(`${P}request_duration_seconds_count`, 'kind="kube"')).toBeGreaterThanOrEqual(5);
    expect(metricValue(text, `${P}tunnels_open`)).toBeGreaterThanOrEqual(1);
    expect(sample(`${P}requests_in_flight`, 'kind="kube"')).toBe(0);
    expect(sample(`${P}tls_certificate_not_after_seconds`, 'source="serving"')).toBeGreaterThan(Date.now() / 1000);
    expect(metricValue(text, `${P}process_cpu_user_seconds_total`)).toBeGreaterThan(0);
    // --metrics-cluster-labels=1: the first cluster seen has its own series, every other one is "other".
    const clusters = new Set([...text.matchAll(/requests_by_cluster_total\{cluster="([^"]+)"/g)].map((m) => m[1]));
    expect(clusters).toEqual(new Set(['cluster-a', 'other']));
  });

  test('/healthz and /readyz answer 200 while serving', async () => {
    expect((await fetch(`http://127.0.0.1:${healthPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${healthPort}/readyz`)).status).toBe(200);
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
