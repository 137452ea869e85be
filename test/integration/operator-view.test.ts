import { existsSync, mkdirSync } from 'node:fs';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { createHealthServer, listenHealth } from '../../src/health/health-server.ts';
import type { ClusterJson, ClustersJson } from '../../src/observability/cluster-state.ts';
import { labelledMetricValue, metricValue } from '../harness/anp.ts';
import { ROOT } from '../harness/certs.ts';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { h1 } from '../harness/client.ts';

// The cluster view through the real chain: GET /clusters on the health port after real traffic, and the
// page at / in a real headless Chromium (Debian's, installed by scripts/build-test-deps.sh), which must
// show an agent going away within a few seconds of a request failing for it.
const CHROMIUM = '/usr/bin/chromium';
const OUT = path.join(ROOT, 'test-output');
const SECRET = 'view-SECRET-7777';

let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
let health: http.Server;
let base: string;
let browser: Browser;
beforeAll(async () => {
  // destHost only: a cluster whose agent is gone gets ANP's "No agent available" (503), not another agent.
  chain = await startChain({ strategies: 'destHost' });
  us = await chain.startUserServer();
  ca = chain.certs.read('ca.crt');
  health = createHealthServer({ ready: us.server.ready, draining: () => false }, us.server.metrics.registry, us.server.clusters);
  base = `http://127.0.0.1:${(await listenHealth(health, '127.0.0.1', 0) as AddressInfo).port}`;
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/build-test-deps.sh (npm test does)`);
  browser = await chromium.launch({ executablePath: CHROMIUM });
  mkdirSync(OUT, { recursive: true });
});
afterAll(async () => {
  await browser?.close();
  health?.close();
  await us?.close();
  await chain?.close();
});

const clusters = async (query = ''): Promise<{ status: number; body: any; text: string }> => {
  const res = await fetch(`${base}/clusters${query}`);
  const text = await res.text();
  expect(res.headers.get('content-type')).toBe('application/json');
  return { status: res.status, body: JSON.parse(text), text };
};
const one = async (name: string): Promise<ClusterJson> => ((await clusters(`?cluster=${name}`)).body as ClustersJson).clusters[0]!;
const planted = { authorization: `Bearer ${SECRET}`, 'x-remote-token': SECRET };

describe('GET /clusters', () => {
  test('after real traffic: agent state, tunnels, requests, errors, latency, bytes and the last error, per cluster', async () => {
    for (let i = 0; i < 3; i++) expect((await h1(us.port, ca, `/cluster-a/api/v1/namespaces/default/pods?token=${SECRET}`, { headers: planted })).status).toBe(200);
    expect((await h1(us.port, ca, '/cluster-a/echo-sha', { method: 'POST', body: 'x'.repeat(10_000) })).status).toBe(200);
    expect((await h1(us.port, ca, `/${chain.refusedCluster}/api/v1/pods`)).status).toBe(502);
    expect((await h1(us.port, ca, '/nobody-home/api/v1/pods')).status).toBe(503);
    // Refused before anything is dialled (a Service not on the allowlist): a request, but not an error.
    expect((await h1(us.port, ca, '/cluster-a/api/v1/namespaces/x/services/y:1/proxy-service/')).status).toBe(403);

    const a = await one('cluster-a');
    expect(a).toMatchObject({ name: 'cluster-a', agent: { state: 'connected' }, inFlight: 0, requests5m: 4, errors5m: 0, lastError: null });
    expect(a.tunnels.short).toBeGreaterThanOrEqual(1);
    expect(a.dialSeconds.samples).toBeGreaterThanOrEqual(1);
    expect(a.dialSeconds.p50).toBeGreaterThan(0);
    expect(a.tlsSeconds.p99).toBeGreaterThan(0);
    // Request headers and the 10 kB body went up; the pod lists and the digest came down.
    expect(a.bytes.up).toBeGreaterThan(10_000);
    expect(a.bytes.down).toBeGreaterThan(500);

    const refused = await one(chain.refusedCluster);
    expect(refused).toMatchObject({ agent: { state: 'refused' }, errors5m: 1, lastError: { code: 'AGENT_DIAL_FAILED', status: 502 } });
    const nobody = await one('nobody-home');
    expect(nobody).toMatchObject({ agent: { state: 'no_agent' }, errors5m: 1, lastError: { code: 'AGENT_UNAVAILABLE', status: 503, text: 'no agent is connected to the proxy-server for this cluster' } });

    const byErrors = (await clusters('?sort=errors')).body as ClustersJson;
    expect(byErrors.clusters.map((c) => c.name)).toEqual(['nobody-home', chain.refusedCluster, 'cluster-a']);
    expect(((await clusters('?sort=name')).body as ClustersJson).clusters.map((c) => c.name)).toEqual(['cluster-a', 'nobody-home', chain.refusedCluster]);
    expect(await clusters('?cluster=never-seen')).toMatchObject({ status: 404, body: { cluster: 'never-seen' } });
    expect(await clusters('?sort=bytes')).toMatchObject({ status: 400 });
    // Nothing of what clients sent but the cluster name: no token, header or path.
    const all = (await clusters()).text;
    expect(all).not.toContain(SECRET);
    expect(all).not.toMatch(/\/api\/v1|pods|echo-sha|authorization/i);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metricValue(metrics, 'cluster_proxy_user_server_clusters_without_agent')).toBe(1);
    expect(labelledMetricValue(metrics, 'cluster_proxy_user_server_proxy_errors_total', 'code="AGENT_UNAVAILABLE",status="503"')).toBe(1);
    expect(labelledMetricValue(metrics, 'cluster_proxy_user_server_proxy_errors_total', 'code="SERVICE_NOT_EXPOSED",status="403"')).toBe(1);
  });

  test('a watch holds a stream tunnel and counts in flight while it runs', async () => {
    const watch = h1(us.port, ca, '/cluster-a/slow?watch=true&chunks=20&interval=100');
    await waitFor(async () => (await one('cluster-a')).inFlight === 1);
    expect((await one('cluster-a')).tunnels.stream).toBe(1);
    expect((await watch).status).toBe(200);
    await waitFor(async () => (await one('cluster-a')).inFlight === 0);
  });

  test('an exec session holds an upgrade tunnel while it is open', async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${us.port}/cluster-a/api/v1/namespaces/default/pods/p1/exec?command=sh`, ['v5.channel.k8s.io'], { ca });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    await waitFor(async () => (await one('cluster-a')).tunnels.upgrade === 1);
    expect((await one('cluster-a')).inFlight).toBe(1);
    ws.close();
    await waitFor(async () => {
      const a = await one('cluster-a');
      return a.tunnels.upgrade === 0 && a.inFlight === 0;
    });
  });
});

describe('the page at / in headless Chromium', () => {
  test('one row per cluster with its state; a dead agent shows within a few seconds of a failed request', async () => {
    const cluster = chain.clusters.b.name;
    expect((await h1(us.port, ca, `/${cluster}/api/v1/pods`)).status).toBe(200);
    const page = await browser.newPage({ viewport: { width: 1400, height: 520 } });
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(e.message));
    const res = await page.goto(`${base}/`);
    expect(res!.headers()['content-security-policy']).toContain("connect-src 'self'");
    const row = page.locator(`tr[data-cluster="${cluster}"]`);
    await row.and(page.locator('[data-state="connected"]')).waitFor({ timeout: 10_000 });
    await expect(row.locator('td[data-label="Agent"]').textContent()).resolves.toContain('connected');
    await expect(row.locator('td[data-label="Last error"]').textContent()).resolves.toBe('none');
    await expect(page.locator('tbody tr').count()).resolves.toBe(4);
    await page.screenshot({ path: path.join(OUT, `operator-view-${chain.mode}-connected.png`), fullPage: true });

    await chain.agents.b.stop();
    // Pooled tunnels went down with the agent; the next dial is answered "No agent available".
    let failedAt = 0;
    for (let i = 0; i < 50 && failedAt === 0; i++) {
      const r = await h1(us.port, ca, `/${cluster}/api/v1/pods`);
      if (r.status === 503) failedAt = Date.now();
      else await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(failedAt, 'a request to the cluster failed with 503').toBeGreaterThan(0);
    await row.and(page.locator('[data-state="no_agent"]')).waitFor({ timeout: 5_000 });
    expect(Date.now() - failedAt).toBeLessThan(5_000);
    await expect(row.locator('td[data-label="Agent"]').textContent()).resolves.toContain('no agent');
    await expect(row.locator('td[data-label="Last error"]').textContent()).resolves.toContain('no agent is connected');
    // Errors first by default: the failing clusters head the table.
    await expect(page.locator('tbody tr').first().getAttribute('data-state')).resolves.not.toBe('connected');
    await page.screenshot({ path: path.join(OUT, `operator-view-${chain.mode}.png`), fullPage: true });

    // Narrow screen: rows become cards with their labels, and nothing scrolls sideways.
    await page.setViewportSize({ width: 380, height: 900 });
    await expect(page.locator('thead').isVisible()).resolves.toBe(false);
    await expect(page.evaluate('document.documentElement.scrollWidth')).resolves.toBeLessThanOrEqual(380);
    await page.screenshot({ path: path.join(OUT, `operator-view-${chain.mode}-narrow.png`), fullPage: true });
    expect(problems).toEqual([]);
    await page.close();
  });

  test('with --cluster-view=false there is neither /clusters nor the page', async () => {
    const off = await chain.startUserServer({ 'cluster-view': 'false' });
    try {
      expect(off.server.clusters).toBeUndefined();
      const h = createHealthServer({ ready: () => true, draining: () => false }, off.server.metrics.registry, off.server.clusters);
      const port = (await listenHealth(h, '127.0.0.1', 0) as AddressInfo).port;
      try {
        expect((await fetch(`http://127.0.0.1:${port}/clusters`)).status).toBe(404);
        expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(404);
        expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
      } finally {
        h.close();
      }
    } finally {
      await off.close();
    }
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
