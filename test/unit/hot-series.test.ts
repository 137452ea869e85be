import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, test } from 'vitest';
import { GridCounter, GridGauge, GridHistogram, type LabelSpace } from '../../src/observability/hot-series.ts';

const KIND: LabelSpace = { name: 'kind', values: ['a', 'b', 'c'] };
const CODE: LabelSpace = { name: 'code', values: ['2xx', '5xx'] };
const BOUNDS = [0.001, 0.01, 0.1, 1];

/** The exposition of one registry holding one metric. */
async function exposition(register: (r: Registry) => void): Promise<string> {
  const r = new Registry();
  register(r);
  return r.metrics();
}

const asMetric = (m: object): Parameters<Registry['registerMetric']>[0] => m as Parameters<Registry['registerMetric']>[0];

describe('the grid series write what prom-client writes for the same updates', () => {
  test('counter over two labels', async () => {
    const updates: [number, number][] = [[0, 0], [1, 2], [1, 2], [0, 2], [1, 0]];
    const ours = new GridCounter('t_requests_total', 'help text', [CODE, KIND]);
    for (const [c, k] of updates) ours.add(c * KIND.values.length + k);
    const theirs = await exposition((registers) => {
      const p = new Counter({ name: 't_requests_total', help: 'help text', labelNames: ['code', 'kind'], registers: [registers] });
      for (const [c, k] of updates) p.inc({ code: CODE.values[c]!, kind: KIND.values[k]! });
    });
    // prom-client lists series in the order they were first touched; the grid in index order.
    const sorted = (text: string): string[] => text.split('\n').sort();
    expect(sorted(await exposition((r) => r.registerMetric(asMetric(ours))))).toEqual(sorted(theirs));
  });

  test('histogram by one label, values on, between and beyond the bounds', async () => {
    const updates: [number, number][] = [[0, 0.0005], [0, 0.001], [0, 0.05], [2, 3], [0, 1], [2, 0.01], [0, 0]];
    const ours = new GridHistogram('t_seconds', 'help text', BOUNDS, KIND);
    for (const [k, v] of updates) ours.observe(k, v);
    const theirs = await exposition((registers) => {
      const p = new Histogram({ name: 't_seconds', help: 'help text', labelNames: ['kind'], buckets: BOUNDS, registers: [registers] });
      for (const [k, v] of updates) p.observe({ kind: KIND.values[k]! }, v);
    });
    expect(await exposition((r) => r.registerMetric(asMetric(ours)))).toBe(theirs);
  });

  test('gauge by one label: every series, zero included', async () => {
    const ours = new GridGauge('t_in_flight', 'help text', KIND);
    ours.add(0, 1);
    ours.add(0, 1);
    ours.add(1, 1);
    ours.add(1, -1);
    const theirs = await exposition((registers) => {
      const p = new Gauge({ name: 't_in_flight', help: 'help text', labelNames: ['kind'], registers: [registers] });
      p.inc({ kind: 'a' }, 2);
      p.set({ kind: 'b' }, 0);
      p.set({ kind: 'c' }, 0);
    });
    expect(await exposition((r) => r.registerMetric(asMetric(ours)))).toBe(theirs);
  });

  test('reset empties every series, as the registry\'s resetMetrics() expects', async () => {
    const h = new GridHistogram('t_seconds', 'help text', BOUNDS, KIND);
    const c = new GridCounter('t_total', 'help text', [KIND]);
    h.observe(1, 0.5);
    c.add(2);
    const r = new Registry();
    r.registerMetric(asMetric(h));
    r.registerMetric(asMetric(c));
    r.resetMetrics();
    expect(await r.metrics()).not.toMatch(/^t_\w+\{.*\} [1-9]/m);
  });
});
