import http2 from 'node:http2';
import https from 'node:https';
import { describe, expect, test } from 'vitest';
import { metricValue } from '../harness/anp.ts';
import { type Chain, type RunningUserServer, useChain } from '../harness/chain.ts';
import { streamedGet, type StreamedResponse } from '../harness/client.ts';

// Long-running requests ride HTTP/2 streams to the service-proxy when it offers h2, as the Go one does.
// Cluster a's service-proxy double offers h2 and http/1.1; cluster b's offers only http/1.1.
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
useChain((c) => ({ chain, us, ca } = c), { http1OnlyServiceProxies: ['1-cluster-b'] }, { 'client-stall-timeout': '5s' });

const MiB = 1024 * 1024;

/** A watch over its own HTTP/1.1 connection, read to the end: status, lines and how it ended. */
async function watch(port: number, path: string, onResponse?: Parameters<typeof streamedGet>[3]): Promise<{ status: number; lines: number; how: StreamedResponse['how'] }> {
  const { status, lines, how } = await streamedGet(port, ca, path, onResponse);
  return { status, lines, how };
}

const dials = (server: RunningUserServer = us): Promise<number> => server.server.metrics.successfulDials();
const received = (cluster: 'a' | 'b', marker: string) => chain.clusters[cluster].serviceProxy.received.filter((r) => r.url.includes(marker));

describe('long-running requests over HTTP/2 to the service-proxy', () => {
  test('50 concurrent watches to one cluster share one tunnel as HTTP/2 streams, and each streams to the end', async () => {
    const dialsBefore = await dials();
    const h2Before = chain.clusters.a.serviceProxy.h2Connections();
    const results = await Promise.all(Array.from({ length: 50 }, (_v, i) => watch(us.port, `/cluster-a/slow?watch=true&chunks=3&interval=100&n=${i}&m=fifty`)));
    expect(results.every((r) => r.status === 200 && r.lines === 3 && r.how === 'complete')).toBe(true);
    // HTTP/1.1 to the service-proxy would need 50 tunnels, one per open watch.
    expect((await dials()) - dialsBefore).toBeLessThanOrEqual(1);
    expect(chain.clusters.a.serviceProxy.h2Connections() - h2Before).toBeLessThanOrEqual(1);
    const atServiceProxy = received('a', 'm=fifty');
    expect(atServiceProxy).toHaveLength(50);
    expect(new Set(atServiceProxy.map((r) => r.httpVersion))).toEqual(new Set(['2.0']));
    // What the service-proxy sees is the same request as over HTTP/1.1: Host kept, routing headers set.
    expect(atServiceProxy[0]!.headers).toMatchObject({ host: `127.0.0.1:${us.port}`, 'cluster-proxy-service': 'kubernetes', 'cluster-proxy-port': '443' });
  });

  test('an HTTP/1.1-only service-proxy still serves watches, on a tunnel each', async () => {
    const dialsBefore = await dials();
    const results = await Promise.all(Array.from({ length: 5 }, (_v, i) => watch(us.port, `/1-cluster-b/slow?watch=true&chunks=3&interval=100&n=${i}&m=h1only`)));
    expect(results.every((r) => r.status === 200 && r.lines === 3 && r.how === 'complete')).toBe(true);
    expect(new Set(received('b', 'm=h1only').map((r) => r.httpVersion))).toEqual(new Set(['1.1']));
    expect(chain.clusters.b.serviceProxy.h2Connections()).toBe(0);
    expect((await dials()) - dialsBefore).toBe(5);
  });

  test('--max-streams-per-tunnel=0 keeps long-running requests on HTTP/1.1', async () => {
    const own = await chain.startUserServer({ 'max-streams-per-tunnel': '0' });
    try {
      const results = await Promise.all(Array.from({ length: 3 }, (_v, i) => watch(own.port, `/cluster-a/slow?watch=true&chunks=2&interval=100&n=${i}&m=off`)));
      expect(results.map((r) => r.how)).toEqual(['complete', 'complete', 'complete']);
      expect(new Set(received('a', 'm=off').map((r) => r.httpVersion))).toEqual(new Set(['1.1']));
      expect(await dials(own)).toBe(3);
    } finally {
      await own.close();
    }
  });

  test('a client that stops reading stalls only its own stream: a watch on the same tunnel streams to the end meanwhile', async () => {
    const dialsBefore = await dials();
    let resumeStalled: (() => void) | undefined;
    const stalled = watch(us.port, `/cluster-a/large?bytes=${256 * MiB}&watch=true&m=stalled`, (res) => {
      res.pause();
      resumeStalled = () => res.resume();
    });
    await expect.poll(() => received('a', 'm=stalled').length).toBe(1);
    // Every buffer on the stalled stream's way (its HTTP/2 window included) is full once the target's
    // writes stop draining.
    await expect.poll(() => chain.clusters.a.target.blockedMs('m=stalled'), { timeout: 10_000 }).toBeGreaterThan(200);
    const other = await watch(us.port, '/cluster-a/slow?watch=true&chunks=20&interval=50&m=beside');
    expect(other).toEqual({ status: 200, lines: 20, how: 'complete' });
    // The stalled client is still connected: it is cut off only after --client-stall-timeout (5s).
    expect(us.logs.join('\n')).not.toMatch(/did not read the response/);
    await expect.poll(() => us.logs.join('\n'), { timeout: 15_000 }).toMatch(/did not read the response for 5000 ms/);
    resumeStalled!();
    expect((await stalled).how).toBe('aborted');
    // Only the stream was reset: the tunnel stayed up and still serves.
    expect((await watch(us.port, '/cluster-a/slow?watch=true&chunks=2&interval=20&m=after')).how).toBe('complete');
    // The tunnel of the first test is still pooled: no new one was needed.
    expect((await dials()) - dialsBefore).toBe(0);
  });

  test('a client that goes away cancels only its own stream: the target sees the cancel, a watch beside it goes on', async () => {
    const abortedBefore = chain.clusters.a.target.aborted();
    const beside = watch(us.port, '/cluster-a/slow?watch=true&chunks=20&interval=50&m=beside2');
    await new Promise<void>((resolve) => {
      const req = https.request({ host: '127.0.0.1', port: us.port, path: '/cluster-a/slow?watch=true&chunks=100&interval=50', ca, servername: 'localhost', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
      req.end();
    });
    await expect.poll(() => chain.clusters.a.target.aborted(), { timeout: 5000 }).toBe(abortedBefore + 1);
    expect(await beside).toEqual({ status: 200, lines: 20, how: 'complete' });
  });
});

describe('cookies', () => {
  test('cookie fields an HTTP/2 client sends apart reach the service-proxy as one Cookie joined with "; ", on either hop', async () => {
    const session = http2.connect(`https://127.0.0.1:${us.port}`, { ca, servername: 'localhost' });
    const get = (path: string): Promise<number> =>
      new Promise((resolve, reject) => {
        // A raw header list, so that Node sends the two cookie fields apart instead of joining them.
        const raw = [':method', 'GET', ':path', path, 'cookie', 'a=1', 'cookie', 'b=2'];
        const stream = session.request(raw as unknown as http2.OutgoingHttpHeaders);
        stream.on('response', (h) => resolve(h[':status'] as number));
        stream.on('error', reject);
        stream.resume();
      });
    try {
      expect(await get('/cluster-a/api/v1/pods?m=cookies-short')).toBe(200);
      expect(await get('/cluster-a/slow?watch=true&chunks=1&interval=10&m=cookies-watch')).toBe(200);
    } finally {
      session.close();
    }
    const cookies = (r: { rawHeaders: string[] }): string[] => r.rawHeaders.filter((_v, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === 'cookie');
    const [short] = received('a', 'm=cookies-short');
    const [long] = received('a', 'm=cookies-watch');
    expect([short!.httpVersion, long!.httpVersion]).toEqual(['1.1', '2.0']);
    expect(cookies(short!)).toEqual(['a=1; b=2']);
    expect(long!.headers.cookie).toBe('a=1; b=2');
  });
});

describe('pooled tunnels', () => {
  test('requests that carry different Host headers share the pooled tunnels', async () => {
    // undici would otherwise take each request's Host as the TLS server name and reconnect when it changes.
    const own = await chain.startUserServer({ 'max-tunnels-per-cluster': '1' });
    const client = new https.Agent({ keepAlive: true, maxSockets: 1, ca, servername: 'localhost' });
    try {
      for (let i = 0; i < 40; i++) {
        const host = i % 2 === 0 ? 'proxy.example.com' : 'cluster-proxy-addon-user.ns.svc:9092';
        const status = await new Promise<number>((resolve, reject) => {
          https.get({ host: '127.0.0.1', port: own.port, path: '/cluster-a/api/v1/pods', headers: { host }, agent: client }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          }).on('error', reject);
        });
        expect(status).toBe(200);
      }
      expect(await dials(own)).toBe(1);
      expect(metricValue(await own.server.metrics.registry.metrics(), 'cluster_proxy_user_server_tunnels_open')).toBe(1);
    } finally {
      client.destroy();
      await own.close();
    }
  });
});

describe('a tunnel that stops answering', () => {
  // Last in the file: it freezes agent a for a few seconds.
  test('--tunnel-ping-interval: an unanswered PING resets the tunnel, and its watches end as errors, not hangs', async () => {
    const own = await chain.startUserServer({ 'tunnel-ping-interval': '1s' });
    const agent = chain.agents.a.proc.child;
    try {
      const frozen = watch(own.port, '/cluster-a/slow?watch=true&chunks=1000&interval=100&m=frozen', (res) => {
        // Freeze the agent once the watch streams: the tunnel stays open, and nothing answers on it.
        res.once('data', () => agent.kill('SIGSTOP'));
      });
      // The watch ends cut off (never a clean end) instead of hanging: with the PING off, it would hang
      // until the test timed out.
      expect((await frozen).how).toBe('aborted');
    } finally {
      agent.kill('SIGCONT');
      await own.close();
    }
  });
});
