import { spawn } from 'node:child_process';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GrpcDialer } from '../../src/tunnel/grpc/grpc-dialer.ts';
import { openTunnel } from '../../src/tunnel/open-tunnel.ts';
import { frontendTunnels, metricValue, startAgent, startProxyServer, type Agent, type ProxyServer } from '../harness/anp.ts';
import { startRoundRobinBalancer, type RoundRobinBalancer } from '../harness/balancer.ts';
import { ROOT } from '../harness/certs.ts';
import { hashedHost, startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';
import { freePort, waitForHttp200 } from '../harness/processes.ts';

// Cases of ANP's gRPC frontend that the suite's other files, which run in both modes, do not cover:
// dials the server never answers, a restarted proxy-server, many tunnels on the bounded connection set,
// replicas behind one Service, and the Go user-server's own command line.
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
beforeAll(async () => {
  chain = await startChain({ mode: 'grpc' });
  us = await chain.startUserServer({ 'connect-timeout': '2s' });
  ca = chain.certs.read('ca.crt');
});
afterAll(async () => {
  await us?.close();
  await chain?.close();
});

const proxyTls = (): tls.SecureContext => tls.createSecureContext({ ca, cert: chain.certs.read('user-client.crt'), key: chain.certs.read('user-client.key') });

describe('gRPC frontend', () => {
  test('the user-server keeps its bounded set of connections: 1,000 concurrent tunnels on 4 connections', async () => {
    const dialer = new GrpcDialer({
      endpoint: { transport: 'tcp', host: '127.0.0.1', port: chain.anp.frontendPort!, servername: 'localhost' },
      proxyTls: (() => {
        const ctx = proxyTls();
        return () => ctx;
      })(),
      connections: 4,
      keepaliveIntervalMs: 0,
      connectTimeoutMs: 20_000,
      agentRetryAfterSeconds: 1,
      stallTimeoutMs: 0,
    });
    const serviceProxyCa = tls.createSecureContext({ ca });
    try {
      const target = { host: hashedHost('cluster-a'), port: 7443 };
      const tunnels: tls.TLSSocket[] = [];
      // Opened 100 at a time: the agent dials the service-proxy for each, and a burst of 1,000 connects
      // overflows the double's listen backlog (the agent's 5 s dial timeout then fires).
      for (let i = 0; i < 10; i++) {
        tunnels.push(...(await Promise.all(Array.from({ length: 100 }, () => openTunnel({ dialer, serviceProxyTls: () => serviceProxyCa, tlsHandshakeTimeoutMs: 30_000 }, target)))));
      }
      expect(tunnels.length).toBe(1000);
      expect(dialer.connectionCount).toBe(4);
      expect(frontendTunnels(await chain.anp.metrics(), 'grpc')).toBe(1000);
      // Every tunnel carries a request to the service-proxy inside its own TLS session.
      const answers = await Promise.all(tunnels.map((t) => new Promise<string>((resolve) => {
        t.once('data', (d: Buffer) => resolve(d.toString('latin1', 0, 12)));
        t.write(`GET /api HTTP/1.1\r\nHost: x\r\nCluster-Proxy-Proto: https\r\nCluster-Proxy-Namespace: default\r\nCluster-Proxy-Service: kubernetes\r\nCluster-Proxy-Port: 443\r\n\r\n`);
      })));
      expect(answers.every((a) => a === 'HTTP/1.1 200')).toBe(true);
      for (const t of tunnels) t.destroy();
      await expect.poll(async () => frontendTunnels(await chain.anp.metrics(), 'grpc'), { timeout: 10_000 }).toBe(0);
    } finally {
      dialer.close();
    }
  });

  // Kills agent b for good: the tests after it use cluster-a.
  test('an agent killed during a pending dial: 504 from our own timeout, and DIAL_CLS leaves nothing pending at ANP', async () => {
    const agent = chain.agents.b;
    agent.proc.child.kill('SIGSTOP');
    const pending = h1(us.port, ca, '/1-cluster-b/api');
    await expect.poll(async () => metricValue(await chain.anp.metrics(), 'konnectivity_network_proxy_server_pending_backend_dials')).toBe(1);
    agent.proc.child.kill('SIGKILL');
    const r = await pending;
    expect(r.status).toBe(504);
    expect(r.json()).toMatchObject({ kind: 'Status', code: 504, reason: 'Timeout' });
    expect(r.json().message).toMatch(/did not answer the dial of cluster-[0-9a-f]{48}\.open-cluster-management\.proxy:7443 within 2000 ms/);
    // ANP never answers a dial whose agent died (issue #126); the DIAL_CLS we sent is what clears it.
    await expect.poll(async () => metricValue(await chain.anp.metrics(), 'konnectivity_network_proxy_server_pending_backend_dials')).toBe(0);
    expect(frontendTunnels(await chain.anp.metrics(), 'grpc')).toBe(0);
    // The other cluster never noticed.
    expect((await h2(us.port, ca, '/cluster-a/api')).status).toBe(200);
  });

  test('a restarted proxy-server: requests fail fast meanwhile, then succeed once agents are back, with no user-server restart', async () => {
    expect((await h1(us.port, ca, '/cluster-a/api')).status).toBe(200);
    await chain.anp.restart();
    // The agent reconnects within its back-off; until then ANP has no agent for the cluster.
    const statuses: number[] = [];
    await expect
      .poll(async () => {
        const r = await h1(us.port, ca, '/cluster-a/api');
        statuses.push(r.status);
        return r.status;
      }, { timeout: 20_000, interval: 200 })
      .toBe(200);
    expect(statuses.every((s) => s === 200 || s === 503 || s === 502)).toBe(true);
    expect((await h2(us.port, ca, '/cluster-a/api/v1/pods')).status).toBe(200);
  });
});

describe('replicas behind one Service', () => {
  let replicas: ProxyServer[] = [];
  let agent: Agent | undefined;
  let balancer: RoundRobinBalancer | undefined;
  let spread: RunningUserServer | undefined;

  beforeAll(async () => {
    replicas = [
      await startProxyServer({ certs: chain.certs, dir: chain.dir, name: 'replica-1', mode: 'grpc', strategies: 'destHost' }),
      await startProxyServer({ certs: chain.certs, dir: chain.dir, name: 'replica-2', mode: 'grpc', strategies: 'destHost' }),
    ];
    // The agent has just (re)connected and knows only replica 1 so far.
    agent = await startAgent({ certs: chain.certs, dir: chain.dir, name: 'replica-agent', server: replicas[0]!, identifiers: [hashedHost('cluster-a')], hosts: { [hashedHost('cluster-a')]: chain.clusters.a.ip } });
    balancer = await startRoundRobinBalancer(replicas.map((r) => r.frontendPort!));
    spread = await chain.startUserServer({ 'proxy-server-port': String(balancer.port), 'proxy-connections': '2' });
  });
  afterAll(async () => {
    await spread?.close();
    await balancer?.close();
    await agent?.stop();
    for (const r of replicas) await r.stop();
  });

  test('every request succeeds: a dial answered "No agent available" is retried on the connection to the other replica', async () => {
    // Concurrent requests, so that the pool opens many tunnels (a dial each) rather than reusing one.
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? h1 : h2)(spread!.port, ca, `/cluster-a/api?i=${i}`)));
    for (const r of results) expect(r.status, r.text).toBe(200);
    // Two connections, one per replica: the set filled before streams shared a connection.
    expect(balancer!.assignments.slice(0, 2)).toEqual([0, 1]);
    const dialsAt = async (r: ProxyServer): Promise<number> => metricValue(await r.metrics(), 'konnectivity_network_proxy_server_dial_duration_seconds_count');
    expect(await dialsAt(replicas[0]!)).toBeGreaterThan(0);
    expect(await dialsAt(replicas[1]!)).toBe(0);
  });

  test('a replica that goes away takes only its own connection: open tunnels on the other go on, new ones succeed', async () => {
    // A watch held open through replica 1, which has the agent.
    const chunks: number[] = [];
    const watch = h1(spread!.port, ca, '/cluster-a/slow?watch=true&chunks=40&interval=50', { onChunk: (_c, at) => chunks.push(at) });
    await expect.poll(() => chunks.length).toBeGreaterThan(2);
    await replicas[1]!.stop();
    for (let i = 0; i < 6; i++) expect((await h2(spread!.port, ca, `/cluster-a/api?after=${i}`)).status).toBe(200);
    const done = await watch;
    expect(done.status).toBe(200);
    expect(chunks.length).toBeGreaterThanOrEqual(40);
  });
});

describe("the Go user-server's command line", () => {
  test("the CLI started with ACM's arguments reaches a cluster through the gRPC proxy-server", async () => {
    const serverPort = await freePort();
    const healthPort = await freePort();
    const c = chain.certs;
    // The user-server container's arguments in ACM's chart, with this chain's files, host and ports.
    const args = [
      'user-server', '--host=127.0.0.1', `--port=${chain.anp.frontendPort}`,
      `--proxy-ca-cert=${c.file('ca.crt')}`, `--proxy-cert=${c.file('user-client.crt')}`, `--proxy-key=${c.file('user-client.key')}`,
      `--server-cert=${c.file('user-server.crt')}`, `--server-key=${c.file('user-server.key')}`, `--server-port=${serverPort}`,
      `--service-proxy-ca-cert=${c.file('ca.crt')}`, '--agent-install-namespace=open-cluster-management-agent-addon',
    ];
    // The health port is 8000 in production; tests run in parallel, so it comes from the environment here.
    const child = spawn(process.execPath, [path.join(ROOT, 'src/cli.ts'), ...args], {
      env: { ...process.env, CLUSTER_PROXY_HEALTH_PORT: String(healthPort), CLUSTER_PROXY_SERVER_ADDRESS: '127.0.0.1', CLUSTER_PROXY_SHUTDOWN_DELAY: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    try {
      await waitForHttp200(`http://127.0.0.1:${healthPort}/readyz`, { name: 'cli', child, logFile: '', stop: async () => {}, log: () => output });
      const r = await h1(serverPort, ca, '/cluster-a/api');
      expect(r.status, output).toBe(200);
      expect(r.json()).toMatchObject({ cluster: 'cluster-a', url: '/api' });
      // Log lines go out in batches, at least once a second.
      await expect.poll(() => output, { timeout: 5_000 }).toContain('"proxyMode":"grpc"');
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  });
});
