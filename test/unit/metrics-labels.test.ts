import { describe, expect, test } from 'vitest';
import { BoundedLabel, OTHER_LABEL } from '../../src/observability/bounded-label.ts';
import { Metrics } from '../../src/observability/metrics.ts';

/** Every label value a metric family holds, per label name. */
async function labelValues(metrics: Metrics, name: string): Promise<Map<string, Set<string>>> {
  const metric = metrics.registry.getSingleMetric(name);
  const out = new Map<string, Set<string>>();
  if (metric === undefined) return out;
  for (const v of (await metric.get()).values) {
    for (const [k, val] of Object.entries(v.labels)) {
      if (!out.has(k)) out.set(k, new Set());
      out.get(k)!.add(String(val));
    }
  }
  return out;
}

describe('BoundedLabel', () => {
  test('keeps the first N values and folds every later one into "other", for good', () => {
    const l = new BoundedLabel(3);
    expect(['a', 'b', 'c', 'd', 'a', 'e', 'c'].map((v) => l.valueFor(v))).toEqual(['a', 'b', 'c', OTHER_LABEL, 'a', OTHER_LABEL, 'c']);
    expect(l.size).toBe(3);
  });

  test('a value spelled "other" never takes a slot of its own', () => {
    const l = new BoundedLabel(2);
    expect(l.valueFor(OTHER_LABEL)).toBe(OTHER_LABEL);
    expect(l.valueFor('x')).toBe('x');
    expect(l.valueFor('y')).toBe('y');
    expect(l.size).toBe(2);
  });

  test('a limit of 0 folds everything', () => {
    expect(new BoundedLabel(0).valueFor('a')).toBe(OTHER_LABEL);
  });
});

describe('Metrics label bounds', () => {
  const traffic = (m: Metrics, clusters: number): void => {
    for (let i = 0; i < clusters; i++) {
      m.requestStarted('kube');
      m.requestFinished('kube', i % 2 ? 'GET' : `WEIRD${i}`, 100 + (i % 600), 0.01, 0.005, `cluster-${i}`);
    }
  };

  test('without the opt-in setting no series carries a cluster label', async () => {
    const m = new Metrics();
    traffic(m, 500);
    expect(m.registry.getSingleMetric('cluster_proxy_user_server_requests_by_cluster_total')).toBeUndefined();
    const text = await m.registry.metrics();
    expect(text).not.toContain('cluster-1');
    expect(text).not.toMatch(/cluster="/);
  });

  test('with a limit of N, 5,000 clusters make at most N + 1 cluster values', async () => {
    const m = new Metrics({ clusterLabelLimit: 10 });
    traffic(m, 5000);
    const labels = await labelValues(m, 'cluster_proxy_user_server_requests_by_cluster_total');
    expect(labels.get('cluster')!.size).toBe(11);
    expect(labels.get('cluster')!.has(OTHER_LABEL)).toBe(true);
    expect(labels.get('cluster')!.has('cluster-9')).toBe(true);
    expect(labels.get('cluster')!.has('cluster-10')).toBe(false);
    const values = (await m.registry.getSingleMetric('cluster_proxy_user_server_requests_by_cluster_total')!.get()).values;
    expect(values.filter((v) => v.labels.cluster === OTHER_LABEL).reduce((n, v) => n + v.value, 0)).toBe(4990);
  });

  test('methods, status codes and kinds stay within fixed sets whatever clients send', async () => {
    const m = new Metrics();
    traffic(m, 2000);
    m.requestRejected('BREW', 400);
    m.requestFinished('service', 'GET', 0, 1);
    const labels = await labelValues(m, 'cluster_proxy_user_server_requests_total');
    for (const method of labels.get('method')!) expect(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'OTHER']).toContain(method);
    for (const code of labels.get('code')!) expect(code).toMatch(/^([1-5]xx|aborted|other)$/);
    for (const kind of labels.get('kind')!) expect(['kube', 'service', 'upgrade', 'invalid']).toContain(kind);
  });

  test('certificate reloads are counted by material and outcome', async () => {
    const m = new Metrics();
    m.tlsReloaded('serving', true);
    m.tlsReloaded('serving', false);
    m.tlsReloaded('proxy_client', false);
    const text = await m.registry.metrics();
    expect(text).toContain('cluster_proxy_user_server_tls_reloads_total{source="serving",outcome="success"} 1');
    expect(text).toContain('cluster_proxy_user_server_tls_reloads_total{source="serving",outcome="failure"} 1');
    expect(text).toContain('cluster_proxy_user_server_tls_reloads_total{source="proxy_client",outcome="failure"} 1');
  });
});
