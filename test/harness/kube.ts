import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './certs.ts';
import { freePort, loopbackBlock, startProcess, type Managed } from './processes.ts';

/** The Kubernetes release test/go/kube/go.mod pins; scripts/build-kube.sh builds it into .cache/kube/<version>/. */
export const KUBE_VERSION = readFileSync(path.join(ROOT, 'test/go/kube/go.mod'), 'utf8').match(/^\tk8s\.io\/kubernetes (v[0-9.]+)/m)![1]!;
export const KUBE_BIN = path.join(ROOT, '.cache/kube', KUBE_VERSION);
export const kubeBin = (name: 'kube-apiserver' | 'etcd' | 'testkubelet' | 'kubectl' | 'clientgo'): string => path.join(KUBE_BIN, name);

/** The namespace every test pod lives in, and the container name of every pod. */
export const NAMESPACE = 'e2e';
export const CONTAINER = 'main';
/** The user the tests act as: bound by RBAC to pods (and their log/exec/attach/portforward) only. */
export const TEST_USER = 'e2e-user';

export interface KubeCluster {
  name: string;
  /** The apiserver's own address, for the service-proxy double and for setup. */
  url: string;
  adminToken: string;
  userToken: string;
  nodeName: string;
  nodeIp: string;
  /** Pods created at start, all Running on the cluster's node. */
  pods: string[];
  apiserver: Managed;
  kubelet: Managed;
  /** A request to the apiserver as the admin, for setup and for changes made during a test. */
  api(method: string, path: string, body?: unknown, contentType?: string): Promise<{ status: number; body: any }>;
  /** Appends a line to a container's log, as the container writing to stdout would. */
  writeLog(pod: string, line: string): void;
}

export interface KubeStack {
  dir: string;
  /** CA of the apiservers' serving certificates. */
  ca: Buffer;
  etcd: Managed;
  clusters: Record<string, KubeCluster>;
  close(): Promise<void>;
}

/**
 * Starts real Kubernetes control planes for `clusterNames`: one etcd, one kube-apiserver per cluster
 * (sharing etcd under their own --etcd-prefix), each with a static token file (an admin in
 * system:masters and TEST_USER, authorised by RBAC), a Node whose kubelet endpoint is a test kubelet on
 * its own 127.x address, the namespace NAMESPACE and `podsPerCluster` Running pods named
 * `<cluster>-pod-<i>`.
 */
export async function startKube(clusterNames: string[], podsPerCluster = 2): Promise<KubeStack> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-kube-'));
  const cleanups: (() => Promise<void>)[] = [];
  try {
    const block = loopbackBlock();
    const nodeIps = clusterNames.map((_, i) => `${block}.${21 + i}`);
    const certs = makeKubeCerts(path.join(dir, 'certs'), nodeIps);
    const ca = readFileSync(path.join(certs, 'ca.crt'));

    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const etcd = startProcess('etcd', kubeBin('etcd'), [`--data-dir=${path.join(dir, 'etcd')}`, `--client-url=http://127.0.0.1:${clientPort}`, `--peer-url=http://127.0.0.1:${peerPort}`], dir);
    cleanups.push(() => etcd.stop());
    await waitForLine(etcd, 'ready', 60_000);

    const clusters: Record<string, KubeCluster> = {};
    await Promise.all(
      clusterNames.map(async (name, i) => {
        const cluster = await startCluster({ name, dir, certs, ca, etcdUrl: `http://127.0.0.1:${clientPort}`, nodeIp: nodeIps[i]!, cleanups });
        await populate(cluster, podsPerCluster);
        clusters[name] = cluster;
      }),
    );
    return {
      dir,
      ca,
      etcd,
      clusters,
      async close() {
        for (const c of cleanups.reverse()) await c().catch(() => {});
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    throw err;
  }
}

async function startCluster(o: { name: string; dir: string; certs: string; ca: Buffer; etcdUrl: string; nodeIp: string; cleanups: (() => Promise<void>)[] }): Promise<KubeCluster> {
  const cdir = path.join(o.dir, o.name);
  const logDir = path.join(cdir, 'logs');
  mkdirSync(logDir, { recursive: true });
  const adminToken = randomBytes(16).toString('hex');
  const userToken = randomBytes(16).toString('hex');
  writeFileSync(path.join(cdir, 'tokens.csv'), `${adminToken},admin,admin-uid,"system:masters"\n${userToken},${TEST_USER},${TEST_USER}-uid\n`, { mode: 0o600 });
  const cert = (n: string) => path.join(o.certs, n);

  const kubelet = startProcess(`${o.name}-kubelet`, kubeBin('testkubelet'), [
    `--listen=${o.nodeIp}:10250`, `--tls-cert=${cert('kubelet.crt')}`, `--tls-key=${cert('kubelet.key')}`,
    `--client-ca=${cert('ca.crt')}`, `--cluster=${o.name}`, `--logs=${logDir}`,
  ], o.dir);
  o.cleanups.push(() => kubelet.stop());

  const port = await freePort();
  const apiserver = startProcess(`${o.name}-apiserver`, kubeBin('kube-apiserver'), [
    `--etcd-servers=${o.etcdUrl}`,
    `--etcd-prefix=/${o.name}`,
    '--bind-address=127.0.0.1',
    '--advertise-address=127.0.0.1',
    `--secure-port=${port}`,
    `--cert-dir=${path.join(cdir, 'apiserver-certs')}`,
    `--tls-cert-file=${cert('apiserver.crt')}`,
    `--tls-private-key-file=${cert('apiserver.key')}`,
    `--token-auth-file=${path.join(cdir, 'tokens.csv')}`,
    '--authorization-mode=RBAC',
    '--anonymous-auth=false',
    `--service-account-issuer=https://kubernetes.default.svc`,
    `--service-account-key-file=${cert('sa.pub')}`,
    `--service-account-signing-key-file=${cert('sa.key')}`,
    '--service-cluster-ip-range=10.96.0.0/24',
    `--kubelet-client-certificate=${cert('apiserver-kubelet-client.crt')}`,
    `--kubelet-client-key=${cert('apiserver-kubelet-client.key')}`,
    `--kubelet-certificate-authority=${cert('ca.crt')}`,
    '--kubelet-preferred-address-types=InternalIP',
    // Nothing here needs these controllers or rate limits, and they cost startup time and memory.
    '--enable-priority-and-fairness=false',
    '--endpoint-reconciler-type=none',
    '--profiling=false',
  ], o.dir);
  o.cleanups.push(() => apiserver.stop());
  await waitForLine(kubelet, 'listening', 20_000);

  const url = `https://127.0.0.1:${port}`;
  const api = (method: string, p: string, body?: unknown, contentType = 'application/json') => request(url, o.ca, adminToken, method, p, body, contentType);
  const deadline = Date.now() + 120_000;
  for (let last = ''; ; ) {
    if (apiserver.child.exitCode !== null) throw new Error(`${o.name} kube-apiserver exited with ${apiserver.child.exitCode}:\n${tail(apiserver)}`);
    if (Date.now() > deadline) throw new Error(`${o.name} kube-apiserver not ready (${last}):\n${tail(apiserver)}`);
    const r = await api('GET', '/readyz').catch((err: Error) => ({ status: 0, body: err.message }));
    if (r.status === 200) break;
    last = `${r.status} ${JSON.stringify(r.body)}`;
    await new Promise((res) => setTimeout(res, 250));
  }
  return {
    name: o.name,
    url,
    adminToken,
    userToken,
    nodeName: `${o.name}-node`,
    nodeIp: o.nodeIp,
    pods: [],
    apiserver,
    kubelet,
    api,
    writeLog: (pod, line) => appendFileSync(path.join(logDir, `${NAMESPACE}_${pod}_${CONTAINER}.log`), `${line}\n`),
  };
}

async function populate(c: KubeCluster, pods: number): Promise<void> {
  const must = async (what: string, r: Promise<{ status: number; body: any }>) => {
    const res = await r;
    if (res.status >= 300) throw new Error(`${c.name}: ${what}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };
  const merge = 'application/merge-patch+json';
  await must('node', c.api('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: c.nodeName } }));
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  await must('node status', c.api('PATCH', `/api/v1/nodes/${c.nodeName}/status`, {
    status: {
      addresses: [{ type: 'InternalIP', address: c.nodeIp }, { type: 'Hostname', address: c.nodeName }],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'test kubelet', lastHeartbeatTime: now, lastTransitionTime: now }],
    },
  }, merge));
  await must('namespace', c.api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NAMESPACE } }));
  // No controller-manager runs, so the namespace's default service account is made here.
  await must('service account', c.api('POST', `/api/v1/namespaces/${NAMESPACE}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } }));
  await must('cluster role', c.api('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'e2e-pods' },
    rules: [
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch', 'patch'] },
      { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
      { apiGroups: [''], resources: ['pods/exec', 'pods/attach', 'pods/portforward'], verbs: ['get', 'create'] },
    ],
  }));
  await must('cluster role binding', c.api('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'e2e-pods' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'e2e-pods' },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: TEST_USER }],
  }));
  for (let i = 1; i <= pods; i++) {
    const name = `${c.name}-pod-${i}`;
    await must(`pod ${name}`, c.api('POST', `/api/v1/namespaces/${NAMESPACE}/pods`, {
      apiVersion: 'v1', kind: 'Pod', metadata: { name, labels: { app: 'e2e' } },
      spec: { nodeName: c.nodeName, containers: [{ name: CONTAINER, image: 'registry.invalid/e2e:1', stdin: true, ports: [{ containerPort: 8080 }] }] },
    }));
    await must(`pod ${name} status`, c.api('PATCH', `/api/v1/namespaces/${NAMESPACE}/pods/${name}/status`, {
      status: {
        phase: 'Running',
        podIP: c.nodeIp,
        startTime: now,
        conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: now }],
        containerStatuses: [{ name: CONTAINER, image: 'registry.invalid/e2e:1', imageID: '', ready: true, started: true, restartCount: 0, state: { running: { startedAt: now } } }],
      },
    }, merge));
    c.writeLog(name, `${name} started`);
    c.pods.push(name);
  }
}

function request(base: string, ca: Buffer, token: string, method: string, p: string, body: unknown, contentType: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const u = new URL(p, base);
    const req = https.request(u, { method, ca, agent: false, headers: { authorization: `Bearer ${token}`, 'content-type': contentType, accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // readyz and friends answer plain text
        }
        resolve({ status: res.statusCode!, body: parsed });
      });
      res.on('error', reject);
    });
    req.setTimeout(10_000, () => req.destroy(new Error('apiserver request timeout')));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function tail(proc: Managed): string {
  return proc.log().split('\n').slice(-40).join('\n');
}

function waitForLine(proc: Managed, text: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${proc.name} did not print "${text}" in ${timeoutMs} ms:\n${tail(proc)}`)), timeoutMs);
    proc.child.stdout!.on('data', (c: Buffer) => {
      seen += c.toString('utf8');
      if (seen.includes(text)) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${proc.name} exited with ${code}:\n${tail(proc)}`));
    });
    proc.child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${proc.name} did not start (run scripts/build-kube.sh): ${err.message}`));
    });
  });
}

/**
 * A CA, the apiservers' serving certificate (127.0.0.1), the kubelets' serving certificate (their node
 * IPs), the apiservers' kubelet client certificate and the service-account signing key pair.
 */
function makeKubeCerts(dir: string, nodeIps: string[]): string {
  mkdirSync(dir, { recursive: true });
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=e2e kube CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name: string, subject: string, usage: string, san: string) => {
    writeFileSync(path.join(dir, `${name}.ext`), [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${usage}`,
      ...(san ? [`subjectAltName=${san}`] : []),
    ].join('\n'));
    ssl('req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`);
  };
  leaf('apiserver', '/CN=kube-apiserver', 'serverAuth', 'IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc');
  leaf('kubelet', '/CN=test-kubelet', 'serverAuth', nodeIps.map((ip) => `IP:${ip}`).join(','));
  leaf('apiserver-kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client', 'clientAuth', '');
  ssl('genrsa', '-out', 'sa.key', '2048');
  ssl('rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub');
  return dir;
}
