/**
 * npm run demo: the whole chain on this machine, one command. Builds the real ANP binaries and
 * Kubernetes (kube-apiserver, etcd, kubectl, a test kubelet) once, cached in .cache/; starts a real
 * kube-apiserver per cluster (test/harness/kube.ts), the ANP proxy-server (gRPC mode, mTLS, as stock; ANP_MODE=http-connect for the other), two
 * agents each with a service-proxy double in front of its cluster's apiserver (test/harness/chain.ts),
 * then the user-server itself as its own process; writes a kubeconfig with one context per cluster and
 * prints commands to try. Ctrl-C stops everything.
 *
 *   npm run demo -- [--port=9092] [--health-port=8000] [--dir=.tmp/demo] [--doubles]
 *
 * --doubles skips Kubernetes: the clusters are then test targets that answer with the request they
 * received, as JSON (no Kubernetes build needed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { ROOT } from '../test/harness/certs.ts';
import { chainSettings, startChain, type Chain } from '../test/harness/chain.ts';
import { KUBE_VERSION, kubeBin, NAMESPACE, startKube, type KubeStack } from '../test/harness/kube.ts';

const DOUBLES_TOKEN = 'demo-token';
// The names test/harness/chain.ts gives its two clusters.
const CLUSTERS = ['cluster-a', '1-cluster-b'] as const;

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '9092' },
    'health-port': { type: 'string', default: '8000' },
    dir: { type: 'string', default: path.join(ROOT, '.tmp/demo') },
    doubles: { type: 'boolean', default: false },
  },
});
const dir = path.resolve(opts.dir);

const say = (line = ''): void => void process.stdout.write(`${line}\n`);

let chain: Chain | undefined;
let kube: KubeStack | undefined;
let userServer: ChildProcess | undefined;
let stopping: Promise<void> | undefined;

function stop(code: number): Promise<void> {
  stopping ??= (async () => {
    say('\nstopping...');
    if (userServer !== undefined && userServer.exitCode === null && userServer.signalCode === null) {
      const exited = new Promise((resolve) => userServer!.once('exit', resolve));
      userServer.kill('SIGTERM');
      const timer = setTimeout(() => userServer!.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    await chain?.close();
    await kube?.close();
    rmSync(dir, { recursive: true, force: true });
    say('stopped');
    process.exit(code);
  })();
  return stopping;
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));

/** Runs a build step with its output shown, and a line every 15 s while it stays silent (Go compiles are). */
async function build(label: string, command: string, args: string[]): Promise<void> {
  const started = Date.now();
  const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const ticker = setInterval(() => say(`${label}: still building (${Math.round((Date.now() - started) / 1000)} s)`), 15_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearInterval(ticker);
  if (code !== 0) throw new Error(`${label} failed (exit ${code})`);
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** The wanted port, or any free one when it is taken (another demo, a real server). */
async function pickPort(wanted: string, name: string): Promise<string> {
  if (wanted === '0' || (await portFree(Number(wanted)))) return wanted;
  say(`port ${wanted} for the ${name} is in use: taking a free one`);
  return '0';
}

async function main(): Promise<void> {
  await build('ANP', 'bash', [path.join(ROOT, 'scripts/build-anp.sh')]);
  // The chain's unreachable-cluster case needs the black-hole listener (test/go/blackhole).
  await build('blackhole', 'bash', ['-c', 'out=.cache/tools/blackhole; [[ -x $out && ! test/go/blackhole/main.go -nt $out ]] || (mkdir -p .cache/tools && cd test/go/blackhole && CGO_ENABLED=0 go build -o ../../../$out .)']);

  if (opts.doubles) {
    say('starting the ANP proxy-server, two agents, service-proxy doubles and targets...');
    chain = await startChain();
  } else {
    await build('Kubernetes', 'bash', [path.join(ROOT, 'scripts/build-kube.sh')]);
    say('starting etcd, a kube-apiserver and a test kubelet per cluster...');
    kube = await startKube([...CLUSTERS]);
    const targets = Object.fromEntries(CLUSTERS.map((name) => [name, kube!.clusters[name]!.url]));
    say('starting the ANP proxy-server, two agents and their service-proxy doubles...');
    // destHost only, as OCM deploys ANP: a cluster without an agent gets a 503.
    chain = await startChain({ strategies: 'destHost', kube: { targets, ca: kube.ca } });
  }
  mkdirSync(dir, { recursive: true });

  const port = await pickPort(opts.port, 'user-server');
  const healthPort = await pickPort(opts['health-port'], 'health server');
  const settings = chainSettings(chain, { 'server-port': port, 'health-address': '127.0.0.1', 'health-port': healthPort, 'log-level': 'info' });
  const log = path.join(chain.dir, 'user-server.log');
  const out = createWriteStream(log);
  userServer = spawn(process.execPath, [path.join(ROOT, 'src/cli.ts'), ...Object.entries(settings).map(([k, v]) => `--${k}=${v}`)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  userServer.stdout!.pipe(out);
  userServer.stderr!.pipe(out);
  const listening = await new Promise<{ port: number; healthPort: number }>((resolve, reject) => {
    let text = '';
    userServer!.stdout!.setEncoding('utf8').on('data', (c: string) => {
      text += c;
      const line = text.split('\n').find((l) => l.includes('user-server listening'));
      if (line !== undefined) resolve(JSON.parse(line));
    });
    userServer!.once('exit', (code) => reject(new Error(`user-server exited ${code}; see ${log}`)));
  });
  userServer.once('exit', (code) => {
    if (stopping === undefined) {
      say(`user-server exited unexpectedly (${code}); its log: ${log}`);
      void stop(1);
    }
  });

  const base = `https://127.0.0.1:${listening.port}`;
  const ca = path.join(dir, 'ca.crt');
  copyFileSync(chain.certs.file('ca.crt'), ca);
  const clusters = [chain.clusters.a.name, chain.clusters.b.name];
  // With Kubernetes, each cluster has its own admin token; the doubles take any.
  const tokenOf = (name: string): string => kube?.clusters[name]!.adminToken ?? DOUBLES_TOKEN;
  const kubeconfig = path.join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    YAML.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: clusters.map((name) => ({ name, cluster: { server: `${base}/${name}`, 'certificate-authority': ca } })),
      users: clusters.map((name) => ({ name: `${name}-admin`, user: { token: tokenOf(name) } })),
      contexts: clusters.map((name) => ({ name, context: { cluster: name, user: `${name}-admin` } })),
      'current-context': clusters[0],
    }),
  );

  const [a, b] = clusters;
  say();
  say('cluster-proxy demo is running');
  say(`  ANP proxy-server  127.0.0.1:${chain.anp.frontendPort} (${chain.mode === 'grpc' ? 'gRPC' : 'http-connect'} over mutual TLS), agents for ${clusters.join(' and ')}`);
  say(`  user-server       ${base}/<cluster>/...   ready: http://127.0.0.1:${listening.healthPort}/readyz`);
  say(`  kubeconfig        ${kubeconfig} (contexts ${clusters.join(', ')})`);
  say(`  logs              ${chain.dir}/*.log`);
  say();
  if (kube === undefined) {
    say('Try (the clusters are test doubles that answer with the request they received):');
    say(`  curl --cacert ${ca} -H 'Authorization: Bearer ${tokenOf(a!)}' '${base}/${a}/api/v1/namespaces?limit=1'`);
    say(`  kubectl --kubeconfig ${kubeconfig} --context ${b} get --raw /${b}/version`);
  } else {
    const k = `${kubeBin('kubectl')} --kubeconfig ${kubeconfig}`;
    const podB = kube.clusters[b!]!.pods[0]!;
    say(`Try (real kube-apiservers ${KUBE_VERSION} behind each cluster; the kubelet is a test double whose containers know cat, echo and hostname):`);
    say(`  curl --cacert ${ca} -H 'Authorization: Bearer ${tokenOf(a!)}' '${base}/${a}/api/v1/namespaces?limit=1'`);
    say(`  ${k} get pods -A`);
    say(`  ${k} --context ${b} -n ${NAMESPACE} exec ${podB} -- hostname`);
    say(`  ${k} --context ${b} -n ${NAMESPACE} logs -f ${podB}`);
  }
  say();
  say('Ctrl-C stops everything.');
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${(err as Error).stack ?? String(err)}\n`);
  void stop(1);
});
