import { describe, expect, test } from 'vitest';
import { ProxyError } from '../../src/errors/proxy-error.ts';
import { ClusterView, isClusterSort } from '../../src/observability/cluster-state.ts';
import type { TunnelTarget } from '../../src/tunnel/open-tunnel.ts';

const START = Date.parse('2026-03-01T12:00:00.000Z');

function view(maxClusters = 10) {
  const clock = { now: START };
  const v = new ClusterView({ maxClusters, hostOf: (c) => `h-${c}`, now: () => clock.now });
  const target = (cluster: string, kind?: TunnelTarget['kind']): TunnelTarget => ({ host: `h-${cluster}`, port: 7443, ...(kind === undefined ? {} : { kind }) });
  return { v, clock, target };
}

const socket = (bytesWritten: number, bytesRead: number) => ({ bytesWritten, bytesRead });

describe('cluster view', () => {
  test('a new cluster has no agent state until a dial, and counts its requests and in-flight', () => {
    const { v } = view();
    const r = v.requestStarted('a');
    v.requestStarted('a').requestFinished(undefined);
    const [c] = v.snapshot('name').clusters;
    expect(c).toMatchObject({ name: 'a', inFlight: 1, requests5m: 2, errors5m: 0, agent: { state: 'unknown', since: null, lastDial: null }, lastError: null });
    r.requestFinished(undefined);
    expect(v.cluster('a')!.clusters[0]!.inFlight).toBe(0);
  });

  test('dial outcomes set the agent state and since when it holds; aborted dials change nothing', () => {
    const { v, clock, target } = view();
    v.requestStarted('a');
    v.dialed(target('a'), { outcome: 'success', connectSeconds: 0.01, tlsSeconds: 0.002 });
    clock.now += 5_000;
    v.dialed(target('a'), { outcome: 'success', connectSeconds: 0.02, tlsSeconds: 0.004 });
    expect(v.cluster('a')!.clusters[0]!.agent).toEqual({ state: 'connected', since: new Date(START).toISOString(), lastDial: new Date(START + 5_000).toISOString() });
    const states: [Parameters<ClusterView['dialed']>[1]['outcome'], string][] = [
      ['agent_unavailable', 'no_agent'],
      ['agent_dial_failed', 'refused'],
      ['agent_dial_timeout', 'timed_out'],
      ['proxy_timeout', 'timed_out'],
      ['service_proxy_tls_failed', 'tls_failure'],
      ['service_proxy_tls_timeout', 'tls_failure'],
      ['proxy_unreachable', 'proxy_error'],
      ['proxy_tls_failed', 'proxy_error'],
      ['proxy_protocol_error', 'proxy_error'],
    ];
    for (const [outcome, state] of states) {
      clock.now += 1_000;
      v.dialed(target('a'), { outcome, connectSeconds: 0.5 });
      expect(v.cluster('a')!.clusters[0]!.agent, outcome).toMatchObject({ state, lastDial: new Date(clock.now).toISOString() });
    }
    const before = v.cluster('a')!.clusters[0]!.agent;
    clock.now += 1_000;
    v.dialed(target('a'), { outcome: 'aborted', connectSeconds: 0.1 });
    expect(v.cluster('a')!.clusters[0]!.agent).toEqual(before);
    // Dials for hosts of clusters not in the view are ignored.
    v.dialed(target('unknown'), { outcome: 'success', connectSeconds: 0.1 });
    expect(v.size).toBe(1);
  });

  test('dial and TLS latency: p50 and p99 of the recent dials, nearest rank', () => {
    const { v, target } = view();
    expect(v.requestStarted('a') && v.cluster('a')!.clusters[0]!.dialSeconds).toEqual({ p50: null, p99: null, samples: 0 });
    for (let i = 1; i <= 100; i++) v.dialed(target('a'), { outcome: 'success', connectSeconds: i / 1000, tlsSeconds: i / 10_000 });
    const c = v.cluster('a')!.clusters[0]!;
    // Only the last 64 are kept: 37..100 ms.
    expect(c.dialSeconds).toEqual({ p50: 0.068, p99: 0.1, samples: 64 });
    expect(c.tlsSeconds).toEqual({ p50: 0.0068, p99: 0.01, samples: 64 });
  });

  test('5xx proxy errors are counted with the last one kept in words; 4xx ones are not errors', () => {
    const { v, clock } = view();
    v.requestStarted('a').requestFinished(new ProxyError('SERVICE_NOT_EXPOSED', 'service x/y is not in the exposed services allowlist'));
    expect(v.cluster('a')!.clusters[0]).toMatchObject({ errors5m: 0, lastError: null });
    clock.now += 1_000;
    v.requestStarted('a').requestFinished(new ProxyError('AGENT_UNAVAILABLE', 'cluster a: No agent available at /secret/path?token=x'));
    const c = v.cluster('a')!.clusters[0]!;
    expect(c.errors5m).toBe(1);
    // Fixed words per code: the error's own message (which may quote anything) is never shown.
    expect(c.lastError).toEqual({ code: 'AGENT_UNAVAILABLE', status: 503, text: 'no agent is connected to the proxy-server for this cluster', at: new Date(clock.now).toISOString() });
    expect(JSON.stringify(v.snapshot('name'))).not.toMatch(/secret|token/);
  });

  test('requests and errors fall out of the window after 5 minutes; history is 30 buckets of 10 s, oldest first', () => {
    const { v, clock } = view();
    v.requestStarted('a').requestFinished(new ProxyError('UPSTREAM_FAILED', 'x'));
    clock.now += 10_000;
    v.requestStarted('a');
    v.requestStarted('a');
    let c = v.cluster('a')!.clusters[0]!;
    expect(c.history.requests).toHaveLength(30);
    expect(c.history.requests.slice(-2)).toEqual([1, 2]);
    expect(c.history.errors.slice(-2)).toEqual([1, 0]);
    expect([c.requests5m, c.errors5m]).toEqual([3, 1]);
    clock.now += 290_000;
    c = v.cluster('a')!.clusters[0]!;
    // The first bucket has left the window; the second is now the oldest.
    expect([c.requests5m, c.errors5m]).toEqual([2, 0]);
    expect(c.history.requests[0]).toBe(2);
    clock.now += 3_600_000;
    c = v.cluster('a')!.clusters[0]!;
    expect([c.requests5m, c.errors5m]).toEqual([0, 0]);
    expect(c.history.requests.every((n) => n === 0)).toBe(true);
  });

  test('tunnels by kind and bytes each way, open ones read live', () => {
    const { v, target } = view();
    v.requestStarted('a');
    const s1 = socket(100, 1000);
    const s2 = socket(5, 7);
    v.tunnelOpened(target('a', 'short'), s1);
    v.tunnelOpened(target('a', 'stream'), s2);
    v.tunnelOpened(target('a', 'upgrade'), socket(1, 1));
    expect(v.cluster('a')!.clusters[0]).toMatchObject({ tunnels: { short: 1, stream: 1, upgrade: 1 }, bytes: { up: 106, down: 1008 } });
    s1.bytesWritten = 200;
    v.tunnelClosed(target('a', 'short'), s1);
    // Closing twice (or a tunnel the record never saw) changes nothing.
    v.tunnelClosed(target('a', 'short'), s1);
    v.tunnelClosed(target('a', 'stream'), socket(1, 1));
    expect(v.cluster('a')!.clusters[0]).toMatchObject({ tunnels: { short: 0, stream: 1, upgrade: 1 }, bytes: { up: 206, down: 1008 } });
  });

  test('bounded: a new cluster pushes out the one seen longest ago, idle ones first', () => {
    const { v, clock, target } = view(3);
    const busy = v.requestStarted('busy');
    clock.now += 1;
    v.requestStarted('old').requestFinished(undefined);
    clock.now += 1;
    v.requestStarted('newer').requestFinished(undefined);
    clock.now += 1;
    v.requestStarted('d').requestFinished(undefined);
    // 'busy' was seen first but has a request in flight: 'old' goes.
    expect(v.snapshot('name').clusters.map((c) => c.name)).toEqual(['busy', 'd', 'newer']);
    v.tunnelOpened(target('newer'), socket(0, 0));
    busy.requestFinished(undefined);
    clock.now += 1;
    v.requestStarted('e');
    expect(v.snapshot('name').clusters.map((c) => c.name)).toEqual(['d', 'e', 'newer']);
    // Reports for a dropped cluster go nowhere.
    v.dialed(target('old'), { outcome: 'success', connectSeconds: 0 });
    expect(v.cluster('old')).toBeUndefined();
    // When nothing is idle, the oldest goes anyway: the view never grows past its bound.
    v.requestStarted('f');
    v.requestStarted('g');
    expect(v.size).toBe(3);
  });

  test('sorted by errors (then name) or by name', () => {
    const { v } = view();
    v.requestStarted('b').requestFinished(new ProxyError('AGENT_DIAL_FAILED', 'x'));
    v.requestStarted('c');
    v.requestStarted('a');
    for (let i = 0; i < 2; i++) v.requestStarted('z').requestFinished(new ProxyError('AGENT_DIAL_TIMEOUT', 'x'));
    expect(v.snapshot('errors').clusters.map((c) => c.name)).toEqual(['z', 'b', 'a', 'c']);
    expect(v.snapshot('name').clusters.map((c) => c.name)).toEqual(['a', 'b', 'c', 'z']);
    expect(v.snapshot('name')).toMatchObject({ generatedAt: new Date(START).toISOString(), windowSeconds: 300, bucketSeconds: 10 });
    expect([isClusterSort('errors'), isClusterSort('name'), isClusterSort('bytes')]).toEqual([true, true, false]);
  });

  test('clusters without agent: last dial found none and still asked for in the last 5 minutes', () => {
    const { v, clock, target } = view();
    v.requestStarted('a');
    v.requestStarted('b');
    v.requestStarted('c');
    v.dialed(target('a'), { outcome: 'agent_unavailable', connectSeconds: 0.01 });
    v.dialed(target('b'), { outcome: 'agent_unavailable', connectSeconds: 0.01 });
    v.dialed(target('c'), { outcome: 'success', connectSeconds: 0.01 });
    expect(v.withoutAgent()).toBe(2);
    clock.now += 200_000;
    v.requestStarted('b');
    clock.now += 200_000;
    expect(v.withoutAgent()).toBe(1);
  });

  test('the snapshot carries the documented fields only', () => {
    const { v } = view();
    v.requestStarted('a');
    expect(Object.keys(v.snapshot('name'))).toEqual(['generatedAt', 'windowSeconds', 'bucketSeconds', 'clusters']);
    expect(Object.keys(v.snapshot('name').clusters[0]!)).toEqual([
      'name', 'lastSeen', 'agent', 'tunnels', 'inFlight', 'requests5m', 'errors5m', 'history', 'dialSeconds', 'tlsSeconds', 'bytes', 'lastError',
    ]);
  });
});
