import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startAgent, startProxyServer, type Agent, type ProxyServer } from '../../test/harness/anp.ts';
import { ROOT, makeCerts, type CertSet } from '../../test/harness/certs.ts';
import { freePort, loopbackBlock, waitForHttp200 } from '../../test/harness/processes.ts';
import { clusterHash } from '../../src/tunnel/target-host.ts';
import { NODE, startBenchProcess, type BenchProcess } from './proc.ts';
import type { DirectTunnelSpec } from './tunnel-client.ts';

/**
 * The Node options the image runs the user-server with (the Dockerfile's NODE_OPTIONS): every Node server
 * of the comparison, the floor included, runs with them, so that the bench measures what ships.
 */
const IMAGE_NODE_OPTIONS = ((): string[] => {
  const m = /^ENV NODE_OPTIONS=(.*)$/m.exec(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
  return m === null ? [] : words(m[1]!.replace(/^"|"$/g, ''));
})();

/** Space-separated arguments (of an environment variable or a Dockerfile line). */
function words(s: string): string[] {
  return s.split(' ').filter((a) => a !== '');
}

export const hashedHost = (cluster: string): string => `cluster-${clusterHash(cluster)}.open-cluster-management.proxy`;

/** Pinned upstream commit of stolostron/cluster-proxy-addon (see scripts/build-upstream-user-server.sh). */
export const UPSTREAM_COMMIT = process.env.UPSTREAM_COMMIT ?? '03253860';
export const UPSTREAM_BIN = path.join(ROOT, '.cache/upstream-user-server', UPSTREAM_COMMIT, 'cluster-proxy');
/** The OCM user-server's version: the newest the Go module proxy serves (scripts/build-ocm-user-server.sh). */
export const OCM_VERSION = process.env.OCM_USER_SERVER_VERSION ?? 'v0.10.0';
export const OCM_BIN = path.join(ROOT, '.cache/ocm-user-server', OCM_VERSION, 'cluster-proxy');
/**
 * Both Go user-servers serve their probes on :8000, hard-coded on every interface, so only one of them
 * runs at a time: `activate` swaps them. Neither pools tunnels, so a restart costs them nothing.
 */
const GO_HEALTH_PORT = 8000;

/**
 * The service-proxy every system reaches: by default the Go double (test/go/goserviceproxy, built by
 * scripts/build-test-deps.sh), an http.Server set up as the real service-proxy sets up its own, with Go's
 * HTTP/2 and HTTP/1.1 stacks, frame and window sizes; BENCH_SERVICE_PROXY=node runs the suite's Node
 * double instead (bench/runners/service-proxy.ts).
 */
export const SERVICE_PROXY: 'go' | 'node' = process.env.BENCH_SERVICE_PROXY === 'node' ? 'node' : 'go';
const GO_SERVICE_PROXY = path.join(ROOT, '.cache/tools/goserviceproxy');

async function untilListening(host: string, port: number, p: BenchProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (p.child.exitCode !== null) throw new Error(`${p.name} exited: ${p.log().slice(-2000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${p.name} did not listen on ${host}:${port}: ${p.log().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export type ServerId = 'ts' | 'tsnoview' | 'tsgrpc' | 'floor' | 'floorgrpc' | 'tsbase' | 'tsgrpcbase' | 'go' | 'ocm';
export interface RunningServer {
  base: string;
  pid: number;
  metrics?: () => Promise<string>;
}

export const HOT_CLUSTER = 'bench';
export const coldCluster = (i: number): string => `cold-${i}`;
export const watchCluster = (i: number): string => `watch-${i}`;
export const COLD_CLUSTERS = 40;
export const WATCH_CLUSTERS = 10;

export interface Topology {
  dir: string;
  certs: CertSet;
  /** The limit's way in: mTLS to the http-connect proxy-server. */
  tunnel: DirectTunnelSpec;
  /** User-servers by system id, with their HTTPS base URL and pid; a Go one only once activated. */
  servers: Map<ServerId, RunningServer>;
  /** Systems this topology can run (the limit and this user-server always). */
  available: Set<ServerId>;
  anpHttp: ProxyServer;
  anpGrpc?: ProxyServer;
  /** Why a Go user-server is not part of this run, if it is not. */
  skipped: Partial<Record<'go' | 'ocm', string>>;
  /** Makes sure the system's server runs; for a Go one, stops the other Go one first (they share :8000). */
  activate(system: string): Promise<void>;
  close(): Promise<void>;
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '0.0.0.0', () => s.close(() => resolve(true)));
  });
}

/**
 * Starts every process of the comparison on loopback: one target, service-proxy doubles (the hot and cold
 * clusters on one, watch clusters spread over two more, since one process may hold 20,000 descriptors at
 * most), an http-connect ANP proxy-server and agent for the limit and this user-server, a grpc-mode
 * proxy-server and agent for the Go user-servers (upstream and OCM), and the user-servers.
 */
/**
 * `baseDir`: a tree of this project at an earlier revision (bench/run.ts --base), run as systems tsbase and
 * tsgrpcbase beside the current one, so that a change is measured before and after in one run.
 */
export async function startTopology(opts: { go: boolean; ocm: boolean; tsgrpc: boolean; tsnoview: boolean; floor: boolean; floorgrpc: boolean; tsbase: boolean; tsgrpcbase: boolean; baseDir?: string | undefined; watches: boolean }): Promise<Topology> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-bench-'));
  const certs = makeCerts(path.join(dir, 'certs'));
  const block = loopbackBlock();
  const stops: (() => Promise<void>)[] = [];
  const started = (p: BenchProcess): BenchProcess => {
    stops.push(() => p.stop());
    return p;
  };
  try {
    const target = started(startBenchProcess('target', NODE, [path.join(ROOT, 'bench/runners/target.ts'), `${block}.2`], dir, { announce: true }));
    const { url: targetUrl } = (await target.ready) as { url: string };
    const startDouble = async (name: string, ip: string): Promise<void> => {
      if (SERVICE_PROXY === 'node') {
        const p = started(startBenchProcess(name, NODE, [path.join(ROOT, 'bench/runners/service-proxy.ts'), ip, certs.file('service-proxy.crt'), certs.file('service-proxy.key'), targetUrl], dir, { announce: true }));
        await p.ready;
        return;
      }
      const p = started(startBenchProcess(name, GO_SERVICE_PROXY, [`${ip}:7443`, certs.file('service-proxy.crt'), certs.file('service-proxy.key'), targetUrl], dir));
      await untilListening(ip, 7443, p);
    };
    const hostsMap: Record<string, string> = {};
    await startDouble('service-proxy-main', `${block}.11`);
    hostsMap[hashedHost(HOT_CLUSTER)] = `${block}.11`;
    for (let i = 0; i < COLD_CLUSTERS; i++) hostsMap[hashedHost(coldCluster(i))] = `${block}.11`;
    if (opts.watches) {
      await startDouble('service-proxy-w1', `${block}.21`);
      await startDouble('service-proxy-w2', `${block}.22`);
      for (let i = 0; i < WATCH_CLUSTERS; i++) hostsMap[hashedHost(watchCluster(i))] = i % 2 === 0 ? `${block}.21` : `${block}.22`;
    }
    const identifiers = Object.keys(hostsMap);

    const anpHttp = await startProxyServer({ certs, dir, name: 'anp-http-connect', strategies: 'destHost' });
    stops.push(() => anpHttp.stop());
    const agentHttp: Agent = await startAgent({ certs, dir, name: 'agent-http-connect', server: anpHttp, identifiers, hosts: hostsMap });
    stops.push(() => agentHttp.stop());

    // BENCH_TS_PROXY=uds: this user-server reaches ANP over a Unix socket (plain HTTP, no outer TLS) through
    // a proxy-server and agent of its own; the limit keeps the mTLS TCP frontend. Off by default, because
    // the ratios then compare two deployments.
    let tsProxyArgs = [
      '--proxy-mode=http-connect', '--proxy-server-host=127.0.0.1', `--proxy-server-port=${anpHttp.frontendPort}`,
      `--proxy-ca-cert=${certs.file('ca.crt')}`, `--proxy-cert=${certs.file('user-client.crt')}`, `--proxy-key=${certs.file('user-client.key')}`,
    ];
    if (process.env.BENCH_TS_PROXY === 'uds') {
      const anpUds = await startProxyServer({ certs, dir, name: 'anp-uds', strategies: 'destHost', uds: true });
      stops.push(() => anpUds.stop());
      const agentUds = await startAgent({ certs, dir, name: 'agent-uds', server: anpUds, identifiers, hosts: hostsMap });
      stops.push(() => agentUds.stop());
      tsProxyArgs = ['--proxy-mode=http-connect', `--proxy-server-uds=${anpUds.udsPath}`];
    }

    const servers: Topology['servers'] = new Map();
    // BENCH_TS_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles the user-servers (bench/README.md).
    const profileArgs = words(process.env.BENCH_TS_NODE_ARGS ?? '');
    const nodeArgs = [...IMAGE_NODE_OPTIONS, ...profileArgs];
    // BENCH_BASE_NODE_ARGS replaces the image's options for the baseline revision alone (set it empty to
    // measure those options themselves, before and after in one run).
    const baseNodeArgs = process.env.BENCH_BASE_NODE_ARGS === undefined ? nodeArgs : [...words(process.env.BENCH_BASE_NODE_ARGS), ...profileArgs];
    // BENCH_TS_ARGS adds user-server flags (not the floor's), e.g. "--access-log=false" to measure one feature.
    const userServerArgs = words(process.env.BENCH_TS_ARGS ?? '');
    const startTs = async (id: 'ts' | 'tsnoview' | 'tsgrpc' | 'floor' | 'floorgrpc' | 'tsbase' | 'tsgrpcbase', proxyArgs: string[]): Promise<void> => {
      const healthPort = await freePort();
      const port = await freePort();
      const floor = id === 'floor' || id === 'floorgrpc';
      const baseline = id === 'tsbase' || id === 'tsgrpcbase';
      const root = baseline ? opts.baseDir! : ROOT;
      const p = started(startBenchProcess({ ts: 'user-server', tsnoview: 'user-server-noview', tsgrpc: 'user-server-grpc', floor: 'floor', floorgrpc: 'floor-grpc', tsbase: 'user-server-base', tsgrpcbase: 'user-server-grpc-base' }[id], NODE, [
        ...(baseline ? baseNodeArgs : nodeArgs),
        path.join(root, floor ? 'bench/runners/floor-proxy.ts' : 'src/cli.ts'),
        '--server-address=127.0.0.1', `--server-port=${port}`,
        `--server-cert=${certs.file('user-server.crt')}`, `--server-key=${certs.file('user-server.key')}`,
        '--health-address=127.0.0.1', `--health-port=${healthPort}`,
        ...proxyArgs,
        ...(floor ? [] : userServerArgs),
        `--service-proxy-ca-cert=${certs.file('ca.crt')}`,
        // No drain wait at the end of a run: the process must exit within the stop timeout, or a
        // --cpu-prof profile is never written.
        '--shutdown-delay=0', '--shutdown-grace=0',
      ], dir));
      await waitForHttp200(`http://127.0.0.1:${healthPort}/readyz`, p);
      servers.set(id, { base: `https://127.0.0.1:${port}`, pid: p.pid, ...(floor ? {} : { metrics: async () => (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text() }) });
    };
    await startTs('ts', tsProxyArgs);
    if (opts.tsnoview) await startTs('tsnoview', [...tsProxyArgs, '--cluster-view=false']);
    if (opts.floor) await startTs('floor', tsProxyArgs);
    if (opts.tsbase) await startTs('tsbase', tsProxyArgs);

    let anpGrpc: ProxyServer | undefined;
    const skipped: Topology['skipped'] = {};
    const bins = { go: UPSTREAM_BIN, ocm: OCM_BIN };
    const build = { go: 'scripts/build-upstream-user-server.sh', ocm: 'scripts/build-ocm-user-server.sh' };
    for (const id of ['go', 'ocm'] as const) {
      if (!opts[id]) skipped[id] = 'not part of this mode';
      else if (!existsSync(bins[id])) skipped[id] = `not built: run ${build[id]} (expects ${path.relative(ROOT, bins[id])})`;
    }
    const goIds: ('go' | 'ocm')[] = (['go', 'ocm'] as const).filter((id) => skipped[id] === undefined);
    if (goIds.length > 0 && !(await portFree(GO_HEALTH_PORT))) {
      for (const id of goIds) skipped[id] = `port ${GO_HEALTH_PORT} is taken, and the Go user-servers bind their probes there unconditionally`;
      goIds.length = 0;
    }
    const available = new Set<ServerId>(['ts', ...goIds]);
    if (opts.tsnoview) available.add('tsnoview');
    if (opts.floor) available.add('floor');
    if (opts.tsbase) available.add('tsbase');
    let startGo: ((id: 'go' | 'ocm') => Promise<BenchProcess>) | undefined;
    if (goIds.length > 0 || opts.tsgrpc || opts.floorgrpc || opts.tsgrpcbase) {
      // One gRPC-mode proxy-server and agent for every system that speaks gRPC: identical paths.
      anpGrpc = await startProxyServer({ certs, dir, name: 'anp-grpc', strategies: 'destHost', mode: 'grpc' });
      stops.push(() => anpGrpc!.stop());
      const agentGrpc = await startAgent({ certs, dir, name: 'agent-grpc', server: anpGrpc, identifiers, hosts: hostsMap });
      stops.push(() => agentGrpc.stop());
    }
    const grpcArgs = (): string[] => [
      '--proxy-mode=grpc', '--proxy-server-host=127.0.0.1', `--proxy-server-port=${anpGrpc!.frontendPort}`,
      `--proxy-ca-cert=${certs.file('ca.crt')}`, `--proxy-cert=${certs.file('user-client.crt')}`, `--proxy-key=${certs.file('user-client.key')}`,
    ];
    if (opts.tsgrpc) {
      await startTs('tsgrpc', grpcArgs());
      available.add('tsgrpc');
    }
    if (opts.floorgrpc) {
      await startTs('floorgrpc', grpcArgs());
      available.add('floorgrpc');
    }
    if (opts.tsgrpcbase) {
      await startTs('tsgrpcbase', grpcArgs());
      available.add('tsgrpcbase');
    }
    if (goIds.length > 0) {
      // Both start an informer on ManagedClusterAddOns that their request path never reads; a kubeconfig
      // pointing at a closed loopback port lets them start (the informer just retries in the background).
      const kubeconfig = path.join(dir, 'go-user-servers.kubeconfig');
      writeFileSync(kubeconfig, [
        'apiVersion: v1', 'kind: Config', 'current-context: none',
        'clusters: [{name: none, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]',
        'users: [{name: none, user: {token: none}}]',
        'contexts: [{name: none, context: {cluster: none, user: none}}]', '',
      ].join('\n'));
      const grpc = anpGrpc!;
      startGo = async (id) => {
        const port = await freePort();
        // The same flags for both: the OCM user-server kept the upstream one's command line.
        const p = startBenchProcess(id === 'go' ? 'upstream-user-server' : 'ocm-user-server', bins[id], [
          'user-server', '--host=127.0.0.1', `--port=${grpc.frontendPort}`,
          `--proxy-ca-cert=${certs.file('ca.crt')}`, `--proxy-cert=${certs.file('user-client.crt')}`, `--proxy-key=${certs.file('user-client.key')}`,
          `--server-cert=${certs.file('user-server.crt')}`, `--server-key=${certs.file('user-server.key')}`, `--server-port=${port}`,
          `--service-proxy-ca-cert=${certs.file('ca.crt')}`,
        ], dir, { env: { ...process.env, KUBECONFIG: kubeconfig, POD_NAMESPACE: 'open-cluster-management' } });
        await waitForHttp200(`http://127.0.0.1:${GO_HEALTH_PORT}/healthz`, p);
        servers.set(id, { base: `https://127.0.0.1:${port}`, pid: p.pid });
        return p;
      };
    }
    let running: { id: 'go' | 'ocm'; proc: BenchProcess } | undefined;
    stops.push(async () => {
      await running?.proc.stop();
    });
    const activate = async (system: string): Promise<void> => {
      if ((system !== 'go' && system !== 'ocm') || running?.id === system) return;
      if (!available.has(system) || startGo === undefined) throw new Error(`${system} is not available: ${skipped[system]}`);
      if (running !== undefined) {
        await running.proc.stop();
        servers.delete(running.id);
        running = undefined;
      }
      running = { id: system, proc: await startGo(system) };
    };

    const topo: Topology = {
      dir,
      certs,
      tunnel: { proxyHost: '127.0.0.1', proxyPort: anpHttp.frontendPort!, caFile: certs.file('ca.crt'), certFile: certs.file('user-client.crt'), keyFile: certs.file('user-client.key') },
      servers,
      available,
      anpHttp,
      skipped,
      activate,
      async close() {
        for (const stop of stops.reverse()) await stop().catch(() => {});
        if (process.env.BENCH_KEEP_LOGS === undefined) rmSync(dir, { recursive: true, force: true });
      },
    };
    if (anpGrpc !== undefined) topo.anpGrpc = anpGrpc;
    return topo;
  } catch (err) {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    process.stderr.write(`bench: setup failed; logs kept in ${dir}\n`);
    throw err;
  }
}
