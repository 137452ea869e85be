import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, test } from 'vitest';
import { buildConfig, readSettings } from '../../src/config/config.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { Metrics } from '../../src/observability/metrics.ts';
import { ServiceAllowlist } from '../../src/routing/service-allowlist.ts';
import { createAdmission, type AdmissionRequest } from '../../src/server/admission.ts';

function setup(impersonation: 'pass' | 'strip' | 'refuse' = 'pass') {
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (logs.push(...c.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)), cb()) });
  const admission = createAdmission({
    metrics: new Metrics(),
    logger: createLogger('info', sink),
    accessLog: true,
    maxRequestsPerCluster: 1,
    maxUpgradesPerCluster: 1,
    impersonation,
    allowlist: () => new ServiceAllowlist([{ namespace: 'tools', service: 'echo', port: '8443' }]),
  });
  return { admission, logs };
}

const req = (url: string, rawHeaders: string[] = ['Host', 'h'], upgrade = false): AdmissionRequest => ({ method: 'GET', url, rawHeaders, requestId: 'r1', upgrade });
const SVC = (s: string): string => `/c1/api/v1/namespaces/tools/services/${s}/proxy-service/x`;

describe('createAdmission: one gate for plain requests and upgrades', () => {
  test.each([false, true])('upgrade=%s: the same refusals in the same order, each counted and logged once', (upgrade) => {
    const { admission, logs } = setup('refuse');
    const code = (url: string, raw?: string[]): string | undefined => {
      const a = admission.admit(req(url, raw, upgrade));
      return a.admitted ? undefined : a.error.code;
    };
    expect(code('/c1')).toBe('BAD_PATH');
    // Parsed first: a bad path with bad headers is a path error.
    expect(code('/Bad/x', ['Host', 'a', 'host', 'b'])).toBe('INVALID_CLUSTER_NAME');
    expect(code('/c1/api', ['Host', 'a', 'host', 'b'])).toBe('DUPLICATE_IDENTITY_HEADER');
    expect(code('/c1/api', ['Host', 'a', 'Impersonate-User', 'x'])).toBe('IMPERSONATION_REFUSED');
    expect(code(SVC('other:8443'))).toBe('SERVICE_NOT_EXPOSED');
    expect(code(SVC('echo:9443'))).toBe('SERVICE_NOT_EXPOSED');
    const rejected = logs.filter((l) => l.msg === 'rejected');
    expect(rejected).toHaveLength(6);
    expect(rejected.at(-1)).toMatchObject({ reqId: 'r1', cluster: 'c1', kind: upgrade ? 'upgrade' : 'service', status: 403, error: 'SERVICE_NOT_EXPOSED', detail: 'service tools/echo is not in the exposed services allowlist' });
  });

  test('a Transfer-Encoding other than chunked alone is refused before anything is dialled; chunked in any case passes', () => {
    const { admission } = setup();
    const te = (value: string) => admission.admit(req('/c1/api', ['Host', 'h', 'Transfer-Encoding', value]));
    for (const value of ['gzip', 'xchunked', 'gzip, chunked', 'chunked, identity', '']) {
      expect(te(value)).toMatchObject({ admitted: false, error: { code: 'MALFORMED_REQUEST', statusCode: 400 } });
    }
    const ok = te(' Chunked ');
    expect(ok.admitted).toBe(true);
    if (ok.admitted) ok.release();
  });

  test('kube routes skip the allowlist; the per-cluster limit counts requests and upgrades apart and release frees it once', () => {
    const { admission } = setup();
    const a = admission.admit(req('/c1/api/v1/namespaces/tools/services/secret/proxy'));
    expect(a.admitted).toBe(true);
    const second = admission.admit(req(SVC('echo:8443')));
    expect(second).toMatchObject({ admitted: false, error: { code: 'TOO_MANY_REQUESTS', retryAfterSeconds: 1 } });
    const up = admission.admit(req('/c1/api', undefined, true));
    expect(up.admitted).toBe(true);
    expect(admission.admit(req('/c1/api', undefined, true))).toMatchObject({ admitted: false, error: { code: 'TOO_MANY_REQUESTS', retryAfterSeconds: 5 } });
    expect(admission.admit(req('/c2/api')).admitted).toBe(true);
    if (!a.admitted) throw new Error('unreachable');
    a.release();
    a.release();
    const third = admission.admit(req(SVC('echo:8443')));
    expect(third.admitted).toBe(true);
    expect(admission.admit(req('/c1/api')).admitted).toBe(false);
  });

  test('strip is handed to the header builder; pass and refuse keep the headers', () => {
    for (const [policy, strip] of [['strip', true], ['pass', false], ['refuse', false]] as const) {
      const a = setup(policy).admission.admit(req('/c1/api'));
      expect(a).toMatchObject({ admitted: true, stripImpersonation: strip });
    }
  });

  test('accessLine: the common fields, with the apiserver view of kube requests', () => {
    const { admission } = setup();
    const r = req('/c1/api/v1/namespaces/ns/pods?limit=1');
    const a = admission.admit(r);
    if (!a.admitted) throw new Error('refused');
    expect(admission.accessLine(r, a.route, 'kube', 200, 0.0123)).toMatchObject({ reqId: 'r1', cluster: 'c1', kind: 'kube', method: 'GET', path: '/api/v1/namespaces/ns/pods', status: 200, durationMs: 12, verb: 'list', resource: 'pods' });
  });
});

describe('settings: --impersonation and --exposed-services-file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'admission-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const f = (name: string): string => {
    const p = join(dir, name);
    writeFileSync(p, 'x');
    return p;
  };
  const base = ['--server-cert', f('c'), '--server-key', f('k'), '--service-proxy-ca-cert', f('ca'), '--proxy-server-uds', join(dir, 's')];
  const build = (argv: string[], env: NodeJS.ProcessEnv = {}) => buildConfig(readSettings([...base, ...argv], env).values);

  test('impersonation defaults to pass, takes strip and refuse (flag or environment), nothing else', () => {
    expect(build([]).impersonation).toBe('pass');
    expect(build(['--impersonation=strip']).impersonation).toBe('strip');
    expect(build([], { CLUSTER_PROXY_IMPERSONATION: 'refuse' }).impersonation).toBe('refuse');
    expect(() => build(['--impersonation=drop'])).toThrow(/--impersonation \(CLUSTER_PROXY_IMPERSONATION\) must be one of pass, strip, refuse/);
  });

  test('the exposed-services file is optional and may be missing at start (an optional ConfigMap volume)', () => {
    expect(build([]).exposedServicesFile).toBeUndefined();
    expect(build(['--exposed-services-file', join(dir, 'not-yet')]).exposedServicesFile).toBe(join(dir, 'not-yet'));
    expect(build([], { CLUSTER_PROXY_EXPOSED_SERVICES_FILE: '/exposed-services/services' }).exposedServicesFile).toBe('/exposed-services/services');
  });
});
