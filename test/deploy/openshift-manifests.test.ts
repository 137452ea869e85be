import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import YAML from 'yaml';
import { buildConfig, parseDuration, readSettings } from '../../src/config/config.ts';
import { SETTINGS, type SettingSpec } from '../../src/config/settings.ts';
import { createHealthServer, listenHealth } from '../../src/health/health-server.ts';
import { loadApiSchemas, nameRuleErrors, type ApiSchemas } from '../harness/api-schemas.ts';
import { ROOT } from '../harness/certs.ts';

// Manifests are free-form YAML; the schemas check their shape.
type Obj = Record<string, any>;

const DIR = path.join(ROOT, 'openshift');
const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
const docs: { file: string; obj: Obj }[] = files.flatMap((file) =>
  YAML.parseAllDocuments(readFileSync(path.join(DIR, file), 'utf8')).map((d) => ({ file, obj: d.toJS() as Obj })),
);
const one = (kind: string): Obj => {
  const found = docs.filter((d) => d.obj.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind} in openshift/, found ${found.length}`);
  return found[0]!.obj;
};

let schemas: ApiSchemas;
beforeAll(() => {
  schemas = loadApiSchemas();
});

describe('schemas (Kubernetes OpenAPI v3, the OpenShift Route CRD and the prometheus-operator CRDs, offline)', () => {
  test('every manifest is valid for its apiVersion and kind, with no unknown field', () => {
    expect(docs.map((d) => d.obj.kind).sort()).toEqual(['Deployment', 'HorizontalPodAutoscaler', 'NetworkPolicy', 'PodDisruptionBudget', 'PrometheusRule', 'Route', 'Service', 'ServiceMonitor']);
    for (const { file, obj } of docs) expect(schemas.validate(obj), file).toEqual([]);
  });

  test('names, labels, annotations and port names follow the apiserver rules the schemas do not carry', () => {
    for (const { file, obj } of docs) expect(nameRuleErrors(obj), file).toEqual([]);
    const bad = structuredClone(one('Deployment'));
    bad.spec.template.spec.containers[0].ports[0].name = 'https-serving-port';
    bad.metadata.labels['app.kubernetes.io/name'] = 'Bad Value';
    bad.metadata.name = 'Cluster_Proxy';
    expect(nameRuleErrors(bad)).toEqual([
      '/metadata/name "Cluster_Proxy" is not a DNS-1123 subdomain',
      '/metadata/labels/app.kubernetes.io/name "Bad Value" is not a label value',
      '/spec/template/spec/containers/0/ports/0/name "https-serving-port" is not an IANA service name',
    ]);
  });

  test('the kustomization lists exactly the manifests', () => {
    const k = YAML.parse(readFileSync(path.join(DIR, 'kustomization.yaml'), 'utf8')) as Obj;
    expect(k.kind).toBe('Kustomization');
    expect([...k.resources].sort()).toEqual(files);
    expect(k.images.map((i: Obj) => i.name)).toContain(one('Deployment').spec.template.spec.containers[0].image.split(':')[0]);
  });

  // A validator that accepts anything would pass the test above: each mutation must be rejected, for the
  // reason expected.
  const mutations: [string, string, (o: Obj) => void, RegExp][] = [
    ['Deployment', 'misspelt container field', (o) => (o.spec.template.spec.containers[0].prots = o.spec.template.spec.containers[0].ports), /containers\/0 must NOT have additional properties: prots/],
    ['Deployment', 'port given as a string', (o) => (o.spec.template.spec.containers[0].ports[0].containerPort = '9092'), /ports\/0\/containerPort must be (integer|number)/],
    ['Deployment', 'missing selector', (o) => delete o.spec.selector, /\/spec must have required property 'selector'/],
    ['Deployment', 'unknown field in ObjectMeta', (o) => (o.metadata.label = { a: 'b' }), /\/metadata must NOT have additional properties: label/],
    ['Service', 'port out of the int32 range', (o) => (o.spec.ports[0].port = 2 ** 40), /ports\/0\/port must match format "int32"/],
    ['Route', 'unknown TLS termination', (o) => (o.spec.tls.termination = 'reencrypted'), /\/spec\/tls\/termination must be equal to one of the allowed values/],
    ['Route', 'misspelt TLS field', (o) => (o.spec.tls.insecureEdgeTermination = 'Redirect'), /\/spec\/tls must NOT have additional properties: insecureEdgeTermination/],
    ['Route', 'Route without its target', (o) => delete o.spec.to, /\/spec must have required property 'to'/],
    ['Route', 'Route label that is not a string', (o) => (o.metadata.labels = { a: 1 }), /\/metadata\/labels\/a must be string/],
    ['HorizontalPodAutoscaler', 'retired apiVersion', (o) => (o.apiVersion = 'autoscaling/v2beta2'), /autoscaling\/v2beta2 HorizontalPodAutoscaler is not a kind/],
    ['PodDisruptionBudget', 'selector of the wrong type', (o) => (o.spec.selector = 'app=x'), /\/spec\/selector must be object/],
    ['NetworkPolicy', 'unknown policy field', (o) => (o.spec.ingres = o.spec.ingress), /\/spec must NOT have additional properties: ingres/],
    ['ServiceMonitor', 'misspelt endpoint field', (o) => (o.spec.endpoints[0].intervall = '30s'), /\/spec\/endpoints\/0 must NOT have additional properties: intervall/],
    ['ServiceMonitor', 'scheme it does not know', (o) => (o.spec.endpoints[0].scheme = 'tcp'), /\/spec\/endpoints\/0\/scheme must be equal to one of the allowed values/],
    ['ServiceMonitor', 'ServiceMonitor without a selector', (o) => delete o.spec.selector, /\/spec must have required property 'selector'/],
    ['PrometheusRule', 'rule group without a name', (o) => delete o.spec.groups[0].name, /\/spec\/groups\/0 must have required property 'name'/],
    ['PrometheusRule', 'rule without its expression', (o) => delete o.spec.groups[0].rules[0].expr, /\/spec\/groups\/0\/rules\/0 must have required property 'expr'/],
    ['PrometheusRule', 'misspelt rule field', (o) => (o.spec.groups[0].rules[0].annotation = {}), /\/spec\/groups\/0\/rules\/0 must NOT have additional properties: annotation/],
  ];
  test.each(mutations)('rejects a %s with a %s', (kind, _what, mutate, error) => {
    const obj = structuredClone(one(kind));
    expect(schemas.validate(obj)).toEqual([]);
    mutate(obj);
    expect(schemas.validate(obj).join('\n')).toMatch(error);
  });
});

describe('the manifests match the server', () => {
  const deployment = one('Deployment');
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const podLabels: Obj = deployment.spec.template.metadata.labels;
  const selects = (selector: Obj): boolean => Object.entries(selector).every(([k, v]) => podLabels[k] === v);
  const port = (name: string): number => container.ports.find((p: Obj) => p.name === name).containerPort;

  // The container's configuration as the server reads it: args, then env with $(VAR) expanded as the
  // kubelet does, with the settings' defaults behind them.
  const env: Record<string, string> = {};
  for (const e of container.env as Obj[]) env[e.name] = e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace' ? 'test-ns' : String(e.value).replace(/\$\((\w+)\)/g, (_, n: string) => env[n] ?? '');
  const settings = readSettings(container.args ?? [], env).values as Record<string, string>;
  const spec = (flag: string): SettingSpec => SETTINGS.find((s) => s.flag === flag)!;

  test('every CLUSTER_PROXY_ variable names a setting, and the server accepts the whole configuration', () => {
    const known = new Set(SETTINGS.map((s) => s.env));
    for (const name of Object.keys(env).filter((n) => n.startsWith('CLUSTER_PROXY_'))) expect(known.has(name), name).toBe(true);
    // Paths point into volumes; stand them up in a temporary root to let the loader check they exist.
    const root = mkdtempSync(path.join(os.tmpdir(), 'cpus-manifest-'));
    try {
      const moved: Record<string, string> = { ...settings };
      for (const s of SETTINGS.filter((x) => x.type === 'path' && settings[x.flag] !== undefined)) {
        moved[s.flag] = path.join(root, settings[s.flag]!);
        mkdirSync(path.dirname(moved[s.flag]!), { recursive: true });
        writeFileSync(moved[s.flag]!, '');
      }
      const config = buildConfig(moved);
      // Stock cluster-proxy runs the proxy-server in gRPC mode behind Service proxy-entrypoint:8090.
      expect(config.proxy).toMatchObject({ transport: 'tcp', host: 'proxy-entrypoint.test-ns.svc', port: 8090 });
      expect(config.proxyMode).toBe('grpc');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('each certificate path is a file of a mounted Secret, mounted whole so rotation reaches the pod', () => {
    const paths = SETTINGS.filter((s) => s.type === 'path' && settings[s.flag] !== undefined);
    expect(paths.map((s) => s.flag).sort()).toEqual(['exposed-services-file', 'proxy-ca-cert', 'proxy-cert', 'proxy-key', 'server-cert', 'server-key', 'service-proxy-ca-cert']);
    for (const s of paths.filter((p) => p.flag !== 'exposed-services-file')) {
      const file = settings[s.flag]!;
      const mount = (container.volumeMounts as Obj[]).find((m) => file.startsWith(`${m.mountPath}/`));
      expect(mount, `${s.flag}=${file}`).toBeDefined();
      expect(mount!.subPath, s.flag).toBeUndefined();
      expect(mount!.readOnly, s.flag).toBe(true);
      const volume = (pod.volumes as Obj[]).find((v) => v.name === mount!.name)!;
      expect(volume.secret, s.flag).toBeDefined();
      expect(volume.secret.items.map((i: Obj) => i.path), s.flag).toContain(path.posix.relative(mount!.mountPath, file));
    }
    // The service allowlist: OCM's ConfigMap, optional (absent: deny all), mounted whole so edits reach the pod.
    const allowFile = settings['exposed-services-file']!;
    const allowMount = (container.volumeMounts as Obj[]).find((m) => allowFile.startsWith(`${m.mountPath}/`));
    expect(allowMount, allowFile).toBeDefined();
    expect(allowMount!.subPath).toBeUndefined();
    expect(allowMount!.readOnly).toBe(true);
    const allowVolume = (pod.volumes as Obj[]).find((v) => v.name === allowMount!.name)!;
    expect(allowVolume.configMap).toMatchObject({ name: 'cluster-proxy-exposed-services', optional: true });
    expect(allowVolume.configMap.items.map((i: Obj) => i.path)).toContain(path.posix.relative(allowMount!.mountPath, allowFile));
    const servingMount = (container.volumeMounts as Obj[]).find((m) => settings['server-cert']!.startsWith(`${m.mountPath}/`))!;
    const serving = (pod.volumes as Obj[]).find((v) => v.name === servingMount.name)!;
    expect(serving.secret.secretName).toBe(one('Service').metadata.annotations['service.beta.openshift.io/serving-cert-secret-name']);
  });

  test('ports and probes are the server ones, and the probe paths answer on a real health server', async () => {
    expect(port('https')).toBe(Number(settings['server-port']));
    expect(port('health')).toBe(Number(settings['health-port']));
    expect(Number(spec('server-port').default)).toBe(9092);
    expect(container.livenessProbe.httpGet).toMatchObject({ path: '/healthz', port: 'health', scheme: 'HTTP' });
    expect(container.readinessProbe.httpGet).toMatchObject({ path: '/readyz', port: 'health', scheme: 'HTTP' });
    const health = createHealthServer({ ready: () => true, draining: () => false }, new Registry());
    const { port: p } = (await listenHealth(health, '127.0.0.1', 0)) as AddressInfo;
    try {
      for (const probe of [container.livenessProbe, container.readinessProbe]) {
        expect((await fetch(`http://127.0.0.1:${p}${probe.httpGet.path}`)).status, probe.httpGet.path).toBe(200);
      }
    } finally {
      health.close();
    }
  });

  test('restricted-v2: non-root without a fixed UID, no privilege escalation, no capabilities, RuntimeDefault seccomp, read-only root', () => {
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container.securityContext).toMatchObject({
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(container.securityContext.capabilities.add).toBeUndefined();
    // restricted-v2 assigns a UID from the namespace's range; a fixed one would be refused there.
    for (const sc of [pod.securityContext, container.securityContext]) {
      expect(sc.runAsUser).toBeUndefined();
      expect(sc.privileged).toBeUndefined();
    }
    expect(pod.hostNetwork ?? false).toBe(false);
    expect(container.resources.requests.cpu).toBeDefined();
    expect(container.resources.limits.memory).toBeDefined();
  });

  test('terminationGracePeriodSeconds outlasts the drain the server runs on SIGTERM', () => {
    const drain = SETTINGS.filter((s) => s.flag.startsWith('shutdown-'));
    const drainMs = drain.reduce((sum, s) => sum + parseDuration(settings[s.flag]!, s), 0);
    // The kubelet sends SIGKILL at the deadline: keep a margin for the exit itself.
    expect(pod.terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(drainMs + 10_000);
  });

  test('the Service, Route, PDB, HPA and NetworkPolicy point at these pods and ports', () => {
    const service = one('Service');
    expect(service.metadata.name).toBe('cluster-proxy-addon-user');
    expect(selects(service.spec.selector)).toBe(true);
    const https = service.spec.ports.find((p: Obj) => p.name === 'https');
    expect(https.port).toBe(9092);
    expect(port(https.targetPort)).toBe(Number(settings['server-port']));

    const route = one('Route');
    expect(route.spec.to).toMatchObject({ kind: 'Service', name: service.metadata.name });
    expect(route.spec.port.targetPort).toBe('https');
    expect(route.spec.tls.termination).toBe('reencrypt');
    // Longer than client-go's longest watch (twice its 5 min minimum), so the router never cuts one.
    expect(haproxySeconds(route.metadata.annotations['haproxy.router.openshift.io/timeout'])).toBeGreaterThanOrEqual(600);

    const pdb = one('PodDisruptionBudget');
    expect(selects(pdb.spec.selector.matchLabels)).toBe(true);
    expect(pdb.spec.maxUnavailable ?? deployment.spec.replicas - pdb.spec.minAvailable).toBeLessThan(deployment.spec.replicas);

    const hpa = one('HorizontalPodAutoscaler');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(selects(deployment.spec.selector.matchLabels)).toBe(true);

    const np = one('NetworkPolicy');
    expect(selects(np.spec.podSelector.matchLabels)).toBe(true);
    expect(np.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    const ingressPorts = np.spec.ingress.flatMap((r: Obj) => r.ports.map((p: Obj) => p.port));
    expect(ingressPorts).toEqual(expect.arrayContaining([Number(settings['server-port']), Number(settings['health-port'])]));
    const egressPorts = np.spec.egress.flatMap((r: Obj) => r.ports.map((p: Obj) => p.port));
    expect(egressPorts).toEqual(expect.arrayContaining([Number(settings['proxy-server-port']), 53]));
  });

  test('the ServiceMonitor scrapes /metrics on the Service port the NetworkPolicy opens to monitoring', () => {
    const service = one('Service');
    const monitor = one('ServiceMonitor');
    const labels: Obj = service.metadata.labels;
    expect(Object.entries(monitor.spec.selector.matchLabels as Obj).every(([k, v]) => labels[k] === v)).toBe(true);
    const endpoint = monitor.spec.endpoints[0];
    expect(endpoint).toMatchObject({ path: '/metrics', scheme: 'http' });
    const metrics = service.spec.ports.find((p: Obj) => p.name === endpoint.port);
    expect(port(metrics.targetPort)).toBe(Number(settings['health-port']));
    const fromMonitoring = one('NetworkPolicy').spec.ingress.find((r: Obj) => r.from?.some((f: Obj) => f.namespaceSelector?.matchLabels?.['network.openshift.io/policy-group'] === 'monitoring'));
    expect(fromMonitoring.ports.map((p: Obj) => p.port)).toContain(Number(settings['health-port']));
    // The alert on ready replicas names this Deployment.
    expect(JSON.stringify(one('PrometheusRule').spec)).toContain(`deployment=\\"${deployment.metadata.name}\\"`);
  });
});

/** HAProxy time values as the router reads them: a number with an optional us/ms/s/m/h/d unit (ms if none). */
function haproxySeconds(v: string): number {
  const m = /^(\d+)(us|ms|s|m|h|d)?$/.exec(v);
  if (m === null) throw new Error(`not an HAProxy time: ${v}`);
  const unit = { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400 }[m[2] ?? 'ms']!;
  return Number(m[1]) * unit;
}
