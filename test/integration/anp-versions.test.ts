import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { AnpMode } from '../harness/anp.ts';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';

// The same build against the ANP versions that matter besides the suite's v0.34.0: v0.36.0 (what OCM
// images build; its grpc-go enforces ALPN) and v0.30.3 (the oldest v0.30.x the Go module proxy serves,
// standing in for ACM's v0.1.6, which it does not serve: the same era-A CONNECT frontend and the same
// gRPC frontend). Both frontend modes each: anp.md matrix cases 1, 6, 11 and 13 (case 32), a stream and
// a large body.
const VERSIONS = ['v0.36.0', 'v0.30.3'];
const MODES: AnpMode[] = ['grpc', 'http-connect'];

describe.each(VERSIONS.flatMap((version) => MODES.map((mode) => ({ version, mode }))))('ANP $version, $mode frontend', ({ version, mode }) => {
  let chain: Chain;
  let us: RunningUserServer;
  let ca: Buffer;
  beforeAll(async () => {
    chain = await startChain({ mode, version, strategies: 'destHost' });
    us = await chain.startUserServer({ 'connect-timeout': '8s' });
    ca = chain.certs.read('ca.crt');
  });
  afterAll(async () => {
    await us?.close();
    await chain?.close();
  });

  test('each cluster answers over HTTP/1.1 and HTTP/2 (case 1)', async () => {
    const a = await h1(us.port, ca, '/cluster-a/api/v1/pods?x=%2F');
    const b = await h2(us.port, ca, '/1-cluster-b/api');
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(a.json()).toMatchObject({ cluster: 'cluster-a', url: '/api/v1/pods?x=%2F' });
    expect(b.json()).toMatchObject({ cluster: '1-cluster-b', url: '/api' });
  });

  test('a cluster without an agent: 503 with Retry-After (case 6)', async () => {
    const r = await h1(us.port, ca, '/no-such-cluster/api');
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('1');
    expect(r.json()).toMatchObject({ kind: 'Status', reason: 'ServiceUnavailable', code: 503 });
  });

  // v0.30.3's CONNECT frontend answers 200 before the dial, then reports a failed dial in-band as a bare
  // `HTTP/0.0 503 Service Unavailable` without the agent's reason: the user-server reads it out of the
  // tunnel and answers 502 saying so, for a refused dial and a timed-out one alike (anp.md section 1.3).
  const eraA = version === 'v0.30.3' && mode === 'http-connect';

  test('the agent is refused at the destination: 502 naming the reason (case 11)', async () => {
    const r = await h2(us.port, ca, `/${chain.refusedCluster}/api`);
    expect(r.status).toBe(502);
    expect(r.json().message, r.text).toMatch(eraA ? /answered in-band after 200: 503 Service Unavailable/ : /connection refused/);
  });

  test('the agent times out dialling: 504 (case 13)', async () => {
    const r = await h1(us.port, ca, `/${chain.blackholeCluster}/api`);
    expect(r.status).toBe(eraA ? 502 : 504);
    expect(r.json()).toMatchObject(eraA ? { reason: 'BadGateway', message: expect.stringMatching(/in-band after 200/) } : { kind: 'Status', reason: 'Timeout' });
  }, 20_000);

  test('a watch streams, and 8 MiB arrive intact', async () => {
    const chunks: number[] = [];
    const w = await h2(us.port, ca, '/cluster-a/slow?watch=true&chunks=5&interval=100', { onChunk: (_c, at) => chunks.push(at) });
    expect(w.status).toBe(200);
    expect(chunks.length).toBeGreaterThanOrEqual(5);
    expect(chunks.at(-1)! - chunks[0]!).toBeGreaterThan(300);
    const big = await h1(us.port, ca, `/cluster-a/large?bytes=${8 << 20}`);
    expect(big.status).toBe(200);
    expect(big.body.length).toBe(8 << 20);
    expect(createHash('sha256').update(big.body).digest('hex')).toBe(big.headers['x-sha256']);
  });
});
