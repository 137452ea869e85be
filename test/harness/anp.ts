import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, type CertSet } from './certs.ts';
import { freePort, startProcess, waitForHttp200, type Managed } from './processes.ts';

export const ANP_VERSION = process.env.ANP_VERSION ?? 'v0.34.0';
/** Where scripts/build-anp.sh put a version's binaries. */
const binDir = (version = ANP_VERSION): string => path.join(ROOT, '.cache/anp', version);

/** ANP's two frontend protocols; one proxy-server process speaks one (its `--mode`). */
export type AnpMode = 'grpc' | 'http-connect';

/**
 * The frontend mode the chain-based tests run against: `ANP_MODE` (set per vitest project, see
 * vitest.config.ts), else grpc, ANP's default and what OCM and ACM deploy.
 */
export function anpMode(): AnpMode {
  const mode = process.env.ANP_MODE ?? 'grpc';
  if (mode !== 'grpc' && mode !== 'http-connect') throw new Error(`ANP_MODE must be grpc or http-connect, not ${JSON.stringify(mode)}`);
  return mode;
}

export interface ProxyServer {
  proc: Managed;
  /**
   * Restarts the proxy-server on the same ports, optionally with other TLS files (frontend certificate
   * and the CA it trusts for clients), as an operator rolling ANP's certificates would; agents reconnect.
   */
  restart(tls?: { clientCaFile?: string; certFile?: string; keyFile?: string }): Promise<void>;
  /** The frontend protocol (`--mode`). */
  mode: AnpMode;
  /** TCP frontend port (mTLS), or undefined in UDS mode. */
  frontendPort?: number;
  udsPath?: string;
  agentPort: number;
  healthPort: number;
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

export async function startProxyServer(opts: {
  certs: CertSet;
  dir: string;
  name: string;
  uds?: boolean;
  strategies?: string;
  /** The frontend protocol; grpc is what the upstream Go user-server speaks. */
  mode?: AnpMode;
  /** ANP version to run (built by scripts/build-anp.sh); default ANP_VERSION. */
  version?: string;
  /** Further flags, e.g. v0.36's `--backend-dial-timeout`. */
  extraArgs?: string[];
}): Promise<ProxyServer> {
  const { certs } = opts;
  const mode = opts.mode ?? 'http-connect';
  const agentPort = await freePort();
  const healthPort = await freePort();
  const adminPort = await freePort();
  const base = [
    `--mode=${mode}`,
    `--proxy-strategies=${opts.strategies ?? 'destHost,default'}`,
    '--agent-bind-address=127.0.0.1', `--agent-port=${agentPort}`,
    `--cluster-cert=${certs.file('proxy-server.crt')}`, `--cluster-key=${certs.file('proxy-server.key')}`,
    `--cluster-ca-cert=${certs.file('ca.crt')}`,
    '--health-bind-address=127.0.0.1', `--health-port=${healthPort}`,
    '--admin-bind-address=127.0.0.1', `--admin-port=${adminPort}`,
    '--server-count=1', '--v=2',
    ...(opts.extraArgs ?? []),
  ];
  let frontendPort: number | undefined;
  let udsPath: string | undefined;
  if (opts.uds) udsPath = path.join(opts.dir, `${opts.name}.sock`);
  else frontendPort = await freePort();
  const argsFor = (tls: { clientCaFile?: string; certFile?: string; keyFile?: string }): string[] => {
    if (udsPath !== undefined) return [...base, `--uds-name=${udsPath}`, '--server-port=0'];
    return [
      ...base,
      '--server-bind-address=127.0.0.1', `--server-port=${frontendPort}`,
      `--server-cert=${tls.certFile ?? certs.file('proxy-server.crt')}`, `--server-key=${tls.keyFile ?? certs.file('proxy-server.key')}`,
      `--server-ca-cert=${tls.clientCaFile ?? certs.file('ca.crt')}`,
    ];
  };
  const bin = path.join(binDir(opts.version), 'proxy-server');
  const proc = startProcess(opts.name, bin, argsFor({}), opts.dir);
  await waitForHttp200(`http://127.0.0.1:${healthPort}/healthz`, proc);
  let restarts = 0;
  const server: ProxyServer = {
    proc,
    mode,
    async restart(tls = {}) {
      await server.proc.stop();
      server.proc = startProcess(`${opts.name}-${++restarts}`, bin, argsFor(tls), opts.dir);
      await waitForHttp200(`http://127.0.0.1:${healthPort}/healthz`, server.proc);
    },
    agentPort,
    healthPort,
    metrics: async () => (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text(),
    stop: () => server.proc.stop(),
  };
  if (frontendPort !== undefined) server.frontendPort = frontendPort;
  if (udsPath !== undefined) server.udsPath = udsPath;
  return server;
}

export interface Agent {
  proc: Managed;
  healthPort: number;
  /** Stops the agent if it still runs (it may have been killed) and starts it again as it was; resolves once it is connected. */
  restart(): Promise<void>;
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts a real proxy-agent in a private mount namespace whose /etc/hosts maps the cluster's hashed
 * host to its service-proxy, as hostAliases do in production, and whose resolv.conf points at
 * 127.0.0.1 so that no DNS query for an unknown name leaves the machine.
 */
export async function startAgent(opts: {
  certs: CertSet;
  dir: string;
  name: string;
  server: ProxyServer;
  /** Host names (`host=` identifiers), or whole identifiers such as `ipv4=127.0.0.2`. */
  identifiers: string[];
  hosts: Record<string, string>;
  /** ANP version to run; default ANP_VERSION. */
  version?: string;
}): Promise<Agent> {
  const hostsFile = path.join(opts.dir, `${opts.name}.hosts`);
  const resolvFile = path.join(opts.dir, `${opts.name}.resolv.conf`);
  writeFileSync(hostsFile, ['127.0.0.1 localhost', ...Object.entries(opts.hosts).map(([h, ip]) => `${ip} ${h}`), ''].join('\n'));
  writeFileSync(resolvFile, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  const healthPort = await freePort();
  const adminPort = await freePort();
  const agentArgs = [
    '--proxy-server-host=127.0.0.1', `--proxy-server-port=${opts.server.agentPort}`,
    `--ca-cert=${opts.certs.file('ca.crt')}`,
    `--agent-cert=${opts.certs.file('proxy-agent.crt')}`, `--agent-key=${opts.certs.file('proxy-agent.key')}`,
    `--agent-id=${opts.name}`,
    `--agent-identifiers=${opts.identifiers.map((h) => (h.includes('=') ? h : `host=${h}`)).join('&')}`,
    '--health-server-host=127.0.0.1', `--health-server-port=${healthPort}`,
    '--admin-bind-address=127.0.0.1', `--admin-server-port=${adminPort}`,
    '--sync-interval=200ms', '--probe-interval=200ms', '--v=2',
  ];
  const script = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@"';
  const start = (name: string): Managed => startProcess(name, 'unshare', ['-m', 'sh', '-c', script, 'sh', hostsFile, resolvFile, path.join(binDir(opts.version), 'proxy-agent'), ...agentArgs], opts.dir);
  let restarts = 0;
  const agent: Agent = {
    proc: start(opts.name),
    healthPort,
    async restart() {
      await agent.proc.stop();
      agent.proc = start(`${opts.name}-${++restarts}`);
      await waitForHttp200(`http://127.0.0.1:${healthPort}/readyz`, agent.proc);
    },
    metrics: async () => (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text(),
    stop: () => agent.proc.stop(),
  };
  await waitForHttp200(`http://127.0.0.1:${healthPort}/readyz`, agent.proc);
  return agent;
}

/** Reads one unlabelled (or first-labelled) sample of a Prometheus text exposition. */
export function metricValue(text: string, name: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `) || line.startsWith(`${name}{`)) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

/** Reads the sample of `name` whose labels are exactly `labels` (as exposed, e.g. `service_method="Proxy"`); 0 if absent. */
export function labelledMetricValue(text: string, name: string, labels: string): number {
  const prefix = `${name}{${labels}} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line === undefined ? 0 : Number(line.slice(prefix.length));
}

/**
 * Frontend tunnels the proxy-server holds open, in either mode: HTTP CONNECT connections
 * (`http_connections`), or `ProxyService/Proxy` streams (`grpc_connections{service_method="Proxy"}`, one
 * per tunnel however many share an HTTP/2 connection).
 */
export function frontendTunnels(text: string, mode: AnpMode): number {
  return mode === 'http-connect'
    ? metricValue(text, 'konnectivity_network_proxy_server_http_connections')
    : labelledMetricValue(text, 'konnectivity_network_proxy_server_grpc_connections', 'service_method="Proxy"');
}
