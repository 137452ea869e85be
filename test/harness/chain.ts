import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll } from 'vitest';
import { buildConfig, readSettings, type Config } from '../../src/config/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { createUserServer, type UserServer } from '../../src/server/user-server.ts';
import { clusterHash } from '../../src/tunnel/target-host.ts';
import { anpMode, startAgent, startProxyServer, type Agent, type AnpMode, type ProxyServer } from './anp.ts';
import { ROOT, makeCerts, type CertSet } from './certs.ts';
import { startClusterTarget, type ClusterTarget } from './cluster-target.ts';
import { loopbackBlock, startProcess, type Managed } from './processes.ts';
import { startServiceProxyDouble, type ServiceProxyDouble } from './service-proxy-double.ts';

export const hashedHost = (cluster: string): string => `cluster-${clusterHash(cluster)}.open-cluster-management.proxy`;

/**
 * The exposed-services allowlist every chain's user-server gets (chainSettings): the Services of the
 * service-proxy doubles (echo, plain) and `missing`, which the doubles cannot reach (their own 502).
 * In the format of OCM's cluster-proxy-exposed-services ConfigMap key.
 */
export const CHAIN_EXPOSED_SERVICES = `# services the test chain exposes
- namespace: tools
  service: echo
  port: "8443"
  protocol: https
- namespace: tools
  service: plain
  port: 8080
- namespace: tools
  service: missing
`;

/** Real kube-apiservers to put behind the service-proxy doubles instead of the cluster targets, by cluster name. */
export interface KubeTargets {
  targets: Record<string, string>;
  ca: Buffer;
}

export interface Cluster {
  name: string;
  ip: string;
  target: ClusterTarget;
  serviceProxy: ServiceProxyDouble;
}

export interface Chain {
  /** The proxy-server's frontend protocol; the user-servers started for the chain use the same (`--proxy-mode`). */
  mode: AnpMode;
  dir: string;
  certs: CertSet;
  anp: ProxyServer;
  agents: { a: Agent; b: Agent };
  clusters: { a: Cluster; b: Cluster };
  /** Clusters whose agent dial is refused / black-holed (both behind agent a). */
  refusedCluster: string;
  blackholeCluster: string;
  startUserServer(settings?: Record<string, string>): Promise<RunningUserServer>;
  close(): Promise<void>;
}

export interface RunningUserServer {
  server: UserServer;
  /** The configuration it was built from (chainSettings and the overrides). */
  config: Config;
  url: string;
  port: number;
  /** Everything the server logged, one JSON line each. */
  logs: string[];
  close(): Promise<void>;
}

/**
 * A full local chain as in production, on loopback: a real ANP proxy-server (`mode`: gRPC or http-connect
 * frontend, by default ANP_MODE, else grpc; mTLS TCP or UDS, which is plain in both modes), two real
 * agents each with a hosts file mapping its cluster's hashed host to a service-proxy double on <ip>:7443,
 * and behind each double a target that says which cluster it is (or, with `kube`, that cluster's real
 * kube-apiserver from test/harness/kube.ts).
 */
export async function startChain(opts: {
  /** The proxy-server's `--mode`; default `anpMode()`: ANP_MODE, else grpc. */
  mode?: AnpMode;
  uds?: boolean;
  strategies?: string;
  kube?: KubeTargets;
  /** Clusters whose service-proxy offers only http/1.1 (the Go one also offers h2). */
  http1OnlyServiceProxies?: string[];
  /** ANP version of the proxy-server and agents (scripts/build-anp.sh); default ANP_VERSION. */
  version?: string;
} = {}): Promise<Chain> {
  const mode = opts.mode ?? anpMode();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-chain-'));
  const certs = makeCerts(path.join(dir, 'certs'));
  writeFileSync(path.join(dir, 'exposed-services.yaml'), CHAIN_EXPOSED_SERVICES);
  const block = loopbackBlock();
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const mkCluster = async (name: string, ip: string): Promise<Cluster> => {
      const target = await startClusterTarget(name, ip);
      const serviceProxy = await startServiceProxyDouble({
        host: ip,
        port: 7443,
        cert: certs.read('service-proxy.crt'),
        key: certs.read('service-proxy.key'),
        kubeTarget: opts.kube?.targets[name] ?? target.url,
        targetCa: opts.kube?.ca,
        http2: !opts.http1OnlyServiceProxies?.includes(name),
        services: { [`https://echo.tools.svc:8443`]: target.url, [`http://plain.tools.svc:8080`]: target.url },
      });
      cleanups.push(() => serviceProxy.close(), () => target.close());
      return { name, ip, target, serviceProxy };
    };
    const a = await mkCluster('cluster-a', `${block}.11`);
    const b = await mkCluster('1-cluster-b', `${block}.12`);
    const refusedCluster = 'refused';
    const blackholeCluster = 'blackhole';
    const blackholeIp = `${block}.13`;
    const blackhole: Managed = startProcess('blackhole', path.join(ROOT, '.cache/tools/blackhole'), [blackholeIp, '7443'], dir);
    cleanups.push(() => blackhole.stop());
    await new Promise<void>((resolve, reject) => {
      blackhole.child.stdout!.once('data', () => resolve());
      blackhole.child.once('exit', (code) => reject(new Error(`blackhole exited ${code}: ${blackhole.log()}`)));
      blackhole.child.once('error', (err) => reject(new Error(`blackhole did not start (run scripts/build-test-deps.sh): ${err.message}`)));
    });

    const version = opts.version === undefined ? {} : { version: opts.version };
    const anp = await startProxyServer({ certs, dir, name: 'proxy-server', mode, uds: opts.uds ?? false, strategies: opts.strategies ?? 'destHost,default', ...version });
    cleanups.push(() => anp.stop());
    const agentA = await startAgent({
      certs, dir, name: 'agent-a', server: anp, ...version,
      identifiers: [hashedHost(a.name), hashedHost(refusedCluster), hashedHost(blackholeCluster)],
      hosts: { [hashedHost(a.name)]: a.ip, [hashedHost(refusedCluster)]: `${block}.14`, [hashedHost(blackholeCluster)]: blackholeIp },
    });
    cleanups.push(() => agentA.stop());
    const agentB = await startAgent({
      certs, dir, name: 'agent-b', server: anp, ...version,
      identifiers: [hashedHost(b.name)],
      hosts: { [hashedHost(b.name)]: b.ip },
    });
    cleanups.push(() => agentB.stop());

    const chain: Chain = {
      mode,
      dir,
      certs,
      anp,
      agents: { a: agentA, b: agentB },
      clusters: { a, b },
      refusedCluster,
      blackholeCluster,
      startUserServer: (settings = {}) => startUserServerFor(chain, settings),
      async close() {
        for (const c of cleanups.reverse()) await c().catch(() => {});
        rmSync(dir, { recursive: true, force: true });
      },
    };
    return chain;
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    throw err;
  }
}

/** The settings a deployment would pass, pointed at this chain; `settings` overrides any of them. */
export function chainSettings(chain: Chain, settings: Record<string, string> = {}): Record<string, string> {
  const base: Record<string, string> = {
    'server-address': '127.0.0.1',
    'server-port': '0',
    'server-cert': chain.certs.file('user-server.crt'),
    'server-key': chain.certs.file('user-server.key'),
    'service-proxy-ca-cert': chain.certs.file('ca.crt'),
    'log-level': 'debug',
    'proxy-mode': chain.mode,
    'exposed-services-file': path.join(chain.dir, 'exposed-services.yaml'),
  };
  if (chain.anp.udsPath !== undefined) {
    base['proxy-server-uds'] = chain.anp.udsPath;
  } else {
    Object.assign(base, {
      'proxy-server-host': '127.0.0.1',
      'proxy-server-port': String(chain.anp.frontendPort),
      'proxy-ca-cert': chain.certs.file('ca.crt'),
      'proxy-cert': chain.certs.file('user-client.crt'),
      'proxy-key': chain.certs.file('user-client.key'),
    });
  }
  return { ...base, ...settings };
}

async function startUserServerFor(chain: Chain, settings: Record<string, string>): Promise<RunningUserServer> {
  const args = Object.entries(chainSettings(chain, settings)).map(([k, v]) => `--${k}=${v}`);
  const config = buildConfig(readSettings(args, {}).values);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(line);
      cb();
    },
  });
  const server = createUserServer(config, createLogger(config.log.level, sink));
  const address = await server.listen();
  return {
    server,
    config,
    url: `https://127.0.0.1:${address.port}`,
    port: address.port,
    logs,
    close: () => server.close(),
  };
}

export interface ChainWithServer {
  chain: Chain;
  us: RunningUserServer;
  /** The CA that signed the user-server's serving certificate. */
  ca: Buffer;
}

/**
 * The usual set-up of an integration file: one chain and one user-server for all its tests, started
 * before them and stopped after them. `take` receives them once they run.
 */
export function useChain(take: (c: ChainWithServer) => void, opts: Parameters<typeof startChain>[0] = {}, settings: Record<string, string> = {}): void {
  let c: Partial<ChainWithServer> = {};
  beforeAll(async () => {
    c.chain = await startChain(opts);
    c.us = await c.chain.startUserServer(settings);
    c.ca = c.chain.certs.read('ca.crt');
    take(c as ChainWithServer);
  });
  afterAll(async () => {
    await c.us?.close();
    await c.chain?.close();
    c = {};
  });
}
