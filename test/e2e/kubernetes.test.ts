import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { h1 } from '../harness/client.ts';
import { CONTAINER, kubeBin, KUBE_VERSION, NAMESPACE, startKube, type KubeCluster, type KubeStack } from '../harness/kube.ts';
import { kubectl, start, startKubectl, writeKubeconfig } from '../harness/kubectl.ts';

// Real Kubernetes clients (kubectl and client-go at KUBE_VERSION) against real kube-apiservers, through
// the user-server, the real ANP proxy-server and agents, and the service-proxy double of each cluster.

const A = 'cluster-a';
const B = '1-cluster-b';
const UNKNOWN = 'no-such-cluster';

let kube: KubeStack;
let chain: Chain;
let us: RunningUserServer;
let kubeconfig: string;
let a: KubeCluster;
let b: KubeCluster;

beforeAll(async () => {
  kube = await startKube([A, B]);
  a = kube.clusters[A]!;
  b = kube.clusters[B]!;
  // OCM deploys the ANP proxy-server with destHost only: a cluster without an agent has no fallback.
  chain = await startChain({ strategies: 'destHost', kube: { targets: { [A]: a.url, [B]: b.url }, ca: kube.ca } });
  us = await chain.startUserServer({ 'agent-retry-after': '1s' });
  kubeconfig = writeKubeconfig(path.join(kube.dir, 'kubeconfig'), chain.certs.file('ca.crt'), [
    { name: A, server: `${us.url}/${A}`, token: a.userToken },
    { name: B, server: `${us.url}/${B}`, token: b.userToken },
    { name: 'wrong-token', server: `${us.url}/${A}`, token: 'not-a-valid-token' },
    { name: UNKNOWN, server: `${us.url}/${UNKNOWN}`, token: a.userToken },
  ]);
}, 240_000);

afterAll(async () => {
  await us?.close();
  await chain?.close();
  await kube?.close();
});

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const at = (c: KubeCluster, ...args: string[]) => ['--context', c.name, ...args];

/**
 * Runs `fn` and returns the Upgrade header of each `subresource` request the cluster's service-proxy
 * received meanwhile: kubectl falls back from WebSocket to SPDY on its own, so only this tells which
 * protocol crossed the proxy.
 */
async function upgradesDuring(c: KubeCluster, subresource: string, fn: () => Promise<void>): Promise<string[]> {
  const received = (c.name === A ? chain.clusters.a : chain.clusters.b).serviceProxy.received;
  const before = received.length;
  await fn();
  return received
    .slice(before)
    .filter((r) => new URL(r.url, 'https://x').pathname.endsWith(`/${subresource}`))
    .map((r) => String(r.headers.upgrade).toLowerCase());
}

describe('kubectl', () => {
  test('version: discovery reaches each real apiserver', async () => {
    const r = await kubectl(kubeconfig, at(a, 'version', '-o', 'json'));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const v = JSON.parse(r.stdout);
    expect(v.clientVersion.gitVersion).toBe(KUBE_VERSION);
    expect(v.serverVersion.gitVersion).toBe(KUBE_VERSION);
  });

  test('get pods -A: each cluster lists its own pods only', async () => {
    for (const [mine, other] of [[a, b], [b, a]] as const) {
      const r = await kubectl(kubeconfig, at(mine, 'get', 'pods', '-A'));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^NAMESPACE\s+NAME\s+READY\s+STATUS/);
      for (const pod of mine.pods) expect(r.stdout).toMatch(new RegExp(`^${NAMESPACE}\\s+${pod}\\s+1/1\\s+Running`, 'm'));
      for (const pod of other.pods) expect(r.stdout).not.toContain(pod);
    }
  });

  test('get pods -w sees a change made during the watch', async () => {
    const pod = a.pods[0]!;
    const watch = startKubectl(kubeconfig, at(a, 'get', 'pods', '-w', '-L', 'step'));
    try {
      await watch.waitFor(new RegExp(`^${pod}\\s.*Running`, 'm'));
      const patched = await a.api('PATCH', `/api/v1/namespaces/${NAMESPACE}/pods/${pod}`, { metadata: { labels: { step: 'watched' } } }, 'application/merge-patch+json');
      expect(patched.status).toBe(200);
      await watch.waitFor(new RegExp(`^${pod}\\s.*Running.*\\swatched$`, 'm'));
    } finally {
      await watch.kill();
    }
  });

  test('logs -f receives lines as they are written', async () => {
    const pod = b.pods[0]!;
    const logs = startKubectl(kubeconfig, at(b, 'logs', '-f', pod, '-c', CONTAINER));
    try {
      await logs.waitFor(new RegExp(`^${pod} started$`, 'm'));
      // Each line is written only after the previous one arrived: the stream is live, not buffered.
      for (let i = 1; i <= 3; i++) {
        b.writeLog(pod, `follow line ${i}`);
        await logs.waitFor(new RegExp(`^follow line ${i}$`, 'm'));
      }
      expect(logs.child.exitCode).toBeNull();
    } finally {
      await logs.kill();
    }
  });

  describe.each([
    ['WebSocket', 'websocket', { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'true' }],
    ['SPDY', 'spdy/3.1', { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'false' }],
  ] as const)('exec over %s', (_name, upgrade, env) => {
    test('stdin reaches the command and its stdout comes back', async () => {
      const input = 'hello from stdin\nsecond line\n';
      const upgrades = await upgradesDuring(a, 'exec', async () => {
        const r = await kubectl(kubeconfig, at(a, 'exec', '-i', a.pods[0]!, '-c', CONTAINER, '--', 'cat'), { input, env });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toBe(input);
      });
      expect(upgrades).toEqual([upgrade]);
    });

    test('4 MiB through cat come back intact', async () => {
      const input = randomBytes(3 * 1024 * 1024).toString('base64');
      const r = await kubectl(kubeconfig, at(b, 'exec', '-i', b.pods[0]!, '--', 'cat'), { input, env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.length).toBe(input.length);
      expect(sha256(r.stdout)).toBe(sha256(input));
    });

    test('the command runs in the pod of the cluster named in the URL', async () => {
      const r = await kubectl(kubeconfig, at(b, 'exec', b.pods[1]!, '--', 'hostname'), { env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${b.pods[1]}\n`);
    });

    test("the command's exit code becomes kubectl's", async () => {
      const r = await kubectl(kubeconfig, at(a, 'exec', a.pods[1]!, '--', 'sh', '-c', 'exit 3'), { env });
      expect(r.code).toBe(3);
      expect(r.stderr).toContain('command terminated with exit code 3');
    });
  });

  test('attach: stdin reaches the main process and its output comes back', async () => {
    const upgrades = await upgradesDuring(b, 'attach', async () => {
      const env = { KUBECTL_REMOTE_COMMAND_WEBSOCKETS: 'true' };
      const r = await kubectl(kubeconfig, at(b, 'attach', '-i', b.pods[0]!, '-c', CONTAINER), { input: 'attached line\n', env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('attached line\n');
    });
    expect(upgrades).toEqual(['websocket']);
  });

  describe.each([
    ['WebSocket', 'websocket', { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'true' }],
    ['SPDY', 'spdy/3.1', { KUBECTL_PORT_FORWARD_WEBSOCKETS: 'false' }],
  ] as const)('port-forward over %s', (_name, upgrade, env) => {
    test('carries an HTTP request to the pod port', async () => {
      const pod = a.pods[0]!;
      const upgrades = await upgradesDuring(a, 'portforward', async () => {
        const pf = startKubectl(kubeconfig, at(a, 'port-forward', `pod/${pod}`, ':8080'), env);
        try {
          const m = await pf.waitFor(/Forwarding from 127\.0\.0\.1:(\d+) -> 8080/);
          const res = await fetch(`http://127.0.0.1:${m[1]}/through/the/tunnel`, { signal: AbortSignal.timeout(20_000) });
          expect(res.status).toBe(200);
          expect(await res.text()).toBe(`cluster=${A} pod=${NAMESPACE}/${pod}:8080 path=/through/the/tunnel\n`);
        } finally {
          await pf.kill();
        }
      });
      expect(upgrades).toEqual([upgrade]);
    });
  });

  test("a wrong token gets the apiserver's own 401", async () => {
    const r = await kubectl(kubeconfig, ['--context', 'wrong-token', 'get', 'pods']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('error: You must be logged in to the server (Unauthorized)');

    const raw = await h1(us.port, chain.certs.read('ca.crt'), `/${A}/api/v1/namespaces/${NAMESPACE}/pods`, { headers: { authorization: 'Bearer not-a-valid-token' } });
    expect(raw.status).toBe(401);
    expect(raw.json()).toEqual({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'Unauthorized', reason: 'Unauthorized', code: 401 });
    // The apiserver's audit filter stamps every answer it makes; the proxy's own errors have none.
    expect(raw.headers['audit-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  test('RBAC of the managed cluster decides: the test user may not list nodes', async () => {
    const r = await kubectl(kubeconfig, at(a, 'get', 'nodes'));
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`Error from server (Forbidden): nodes is forbidden: User "e2e-user" cannot list resource "nodes" in API group "" at the cluster scope`);
  });

  // client-go retries a 503 with Retry-After 10 times, so every request kubectl makes for a cluster without
  // an agent takes 10 x agent-retry-after; `get pods` makes 5 discovery requests first (50 s at 1 s).
  // `get --raw` makes one request, and kubectl prints the Status message of its last answer.
  test('an unknown cluster gets the proxy 503 Status, printed clearly', async () => {
    const r = await kubectl(kubeconfig, ['--context', UNKNOWN, 'get', '--raw', `/api/v1/namespaces/${NAMESPACE}/pods`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      new RegExp(`^Error from server \\(ServiceUnavailable\\): cluster ${UNKNOWN}: no agent is connected for cluster-[0-9a-f]+\\.open-cluster-management\\.proxy \\(.*No agent available\\)$`, 'm'),
    );

    const raw = await h1(us.port, chain.certs.read('ca.crt'), `/${UNKNOWN}/api`, { headers: { authorization: `Bearer ${a.userToken}` } });
    expect(raw.status).toBe(503);
    expect(raw.headers['retry-after']).toBe('1');
    expect(raw.json()).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'ServiceUnavailable', code: 503, details: { name: UNKNOWN } });
  });
});

describe('client-go', () => {
  test('the documented rest.Config lists, watches and follows logs through the proxy', async () => {
    const pod = b.pods[1]!;
    const run = start(kubeBin('clientgo'), [
      `--host=${us.url}/${B}`,
      `--ca=${chain.certs.file('ca.crt')}`,
      `--token=${b.userToken}`,
      `--namespace=${NAMESPACE}`,
      `--log-pod=${pod}`,
      '--log-lines=2',
    ]);
    try {
      await run.waitFor(/"step":"watching"/);
      const patched = await b.api('PATCH', `/api/v1/namespaces/${NAMESPACE}/pods/${pod}`, { metadata: { labels: { step: 'client-go' } } }, 'application/merge-patch+json');
      expect(patched.status).toBe(200);
      await run.waitFor(/"step":"following"/);
      b.writeLog(pod, 'written while client-go follows');
      const r = await run.done();
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const steps = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
      expect(steps[0]).toEqual({ step: 'version', gitVersion: KUBE_VERSION });
      expect(steps[1]).toMatchObject({ step: 'list', pods: b.pods });
      expect(steps).toContainEqual({ step: 'watch', type: 'MODIFIED', pod, labels: { app: 'e2e', step: 'client-go' } });
      expect(steps.filter((s) => s.step === 'log').map((s) => s.line)).toEqual([`${pod} started`, 'written while client-go follows']);
      expect(steps.at(-1)).toEqual({ step: 'done' });
    } finally {
      await run.kill();
    }
  });
});
