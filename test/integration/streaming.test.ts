import { createHash } from 'node:crypto';
import https from 'node:https';
import { Pool } from 'undici';
import { describe, expect, test } from 'vitest';
import { frontendTunnels, metricValue } from '../harness/anp.ts';
import { type Chain, type RunningUserServer, useChain } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';
import { patternSha256 } from '../harness/cluster-target.ts';

let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
useChain((c) => ({ chain, us, ca } = c), {}, { 'max-tunnels-per-cluster': '8' });

const MiB = 1024 * 1024;

describe('streaming', () => {
  test.each([['HTTP/1.1', h1], ['HTTP/2', h2]] as const)('%s: chunks of a follow stream reach the client as they are written', async (_name, client) => {
    const arrivals: number[] = [];
    const r = await client(us.port, ca, '/cluster-a/api/v1/namespaces/default/pods/p/slow/log?follow=true&chunks=4&interval=300', {
      onChunk: (_c, at) => arrivals.push(at),
    });
    expect(r.status).toBe(200);
    expect(r.text).toBe('cluster-a line 0\ncluster-a line 1\ncluster-a line 2\ncluster-a line 3\n');
    // The first line was readable long before the stream ended (4 x 300 ms).
    expect(arrivals.length).toBeGreaterThanOrEqual(3);
    expect(arrivals.at(-1)! - arrivals[0]!).toBeGreaterThan(600);
  });

  test('a watch gets its response headers before the first event', async () => {
    const started = performance.now();
    const headersAt = await new Promise<number>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: us.port, path: '/cluster-a/slow?watch=true&chunks=2&interval=1500', ca, servername: 'localhost', agent: false }, (res) => {
        resolve(performance.now() - started);
        res.resume();
      });
      req.on('error', reject);
      req.end();
    });
    expect(headersAt).toBeLessThan(1400);
  });

  test.each([['HTTP/1.1', h1], ['HTTP/2', h2]] as const)('%s: a 64 MiB download keeps its sha256', async (_name, client) => {
    const r = await client(us.port, ca, `/1-cluster-b/large?bytes=${64 * MiB}`);
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(64 * MiB);
    expect(createHash('sha256').update(r.body).digest('hex')).toBe(patternSha256(64 * MiB));
  });

  test('a 64 MiB upload, streamed and chunked, keeps its sha256', async () => {
    const hash = createHash('sha256');
    const result = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: us.port, path: '/cluster-a/echo-sha', method: 'PUT', ca, servername: 'localhost', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      let sent = 0;
      const chunk = Buffer.alloc(MiB);
      const pump = (): void => {
        while (sent < 64 * MiB) {
          chunk.fill(sent / MiB);
          hash.update(chunk);
          sent += MiB;
          if (!req.write(Buffer.from(chunk))) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
    expect(result.status).toBe(200);
    expect(JSON.parse(result.body)).toEqual({ cluster: 'cluster-a', bytes: 64 * MiB, sha256: hash.digest('hex') });
  });

  test('a request body sent with Connection: close still gets its whole response (no half-close of the tunnel)', async () => {
    const body = Buffer.alloc(256 * 1024, 7);
    const r = await h1(us.port, ca, '/cluster-a/echo', { method: 'POST', body, headers: { connection: 'close', 'content-length': String(body.length) } });
    expect(r.status).toBe(200);
    expect(r.body.equals(body)).toBe(true);
  });
});

describe('tunnels', () => {
  test('when the destination closes after a full response, every byte arrives and the tunnel is released', async () => {
    const before = metricValue(await chain.anp.metrics(), 'konnectivity_network_proxy_server_established_connections');
    const r = await h1(us.port, ca, '/1-cluster-b/close');
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({ cluster: '1-cluster-b', closed: true });
    await expect.poll(async () => metricValue(await chain.anp.metrics(), 'konnectivity_network_proxy_server_established_connections'), { timeout: 5000 }).toBeLessThanOrEqual(before);
  });

  test('1,000 requests reuse the pool: tunnels opened at ANP (CONNECTs or gRPC streams) stay near the pool size', async () => {
    const dialsBefore = await us.server.metrics.successfulDials();
    const anpBefore = metricValue(await chain.anp.metrics(), 'konnectivity_network_proxy_server_dial_duration_seconds_count');
    const client = new Pool(us.url, { connect: { ca, servername: 'localhost' }, connections: 16 });
    try {
      let ok = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        for (let i = 0; i < 63; i++) {
          const res = await client.request({ path: '/cluster-a/api/v1/pods', method: 'GET' });
          await res.body.text();
          if (res.statusCode === 200) ok++;
        }
      }));
      expect(ok).toBe(63 * 16);
    } finally {
      await client.close();
    }
    const dials = (await us.server.metrics.successfulDials()) - dialsBefore;
    const anpDials = metricValue(await chain.anp.metrics(), 'konnectivity_network_proxy_server_dial_duration_seconds_count') - anpBefore;
    // max-tunnels-per-cluster is 8 here; a per-request design would open ~1,000.
    expect(dials).toBeLessThanOrEqual(8);
    expect(anpDials).toBe(dials);
  });

  test('200 parallel requests through one agent all succeed, and closing the pools releases every tunnel at ANP', async () => {
    const own = await chain.startUserServer();
    try {
      const client = new Pool(own.url, { connect: { ca, servername: 'localhost' }, connections: 200 });
      const results = await Promise.all(Array.from({ length: 200 }, async (_v, i) => {
        const res = await client.request({ path: `/cluster-a/api/v1/pods?i=${i}`, method: 'GET' });
        const body = (await res.body.json()) as { url: string };
        return res.statusCode === 200 && body.url === `/api/v1/pods?i=${i}`;
      }));
      await client.close();
      expect(results.every(Boolean)).toBe(true);
    } finally {
      await own.close();
    }
    // http_connections in http-connect mode, grpc_connections{service_method="Proxy"} (streams) in gRPC mode.
    await expect.poll(async () => frontendTunnels(await chain.anp.metrics(), chain.mode), { timeout: 5000 }).toBeLessThanOrEqual(8 + 2);
  });

  test('a client that goes away mid-stream tears its tunnel down and the target sees the stream end', async () => {
    const abortedBefore = chain.clusters.a.target.aborted();
    const openBefore = await openTunnels();
    await new Promise<void>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port: us.port, path: '/cluster-a/slow?watch=true&chunks=100&interval=100', ca, servername: 'localhost', agent: false }, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => {});
      req.on('close', () => resolve());
      req.setTimeout(10_000, () => reject(new Error('no data')));
      req.end();
    });
    await expect.poll(() => chain.clusters.a.target.aborted(), { timeout: 5000 }).toBe(abortedBefore + 1);
    await expect.poll(openTunnels, { timeout: 5000 }).toBeLessThanOrEqual(openBefore);
  });
});

async function openTunnels(): Promise<number> {
  return metricValue(await us.server.metrics.registry.metrics(), 'cluster_proxy_user_server_tunnels_open');
}

describe('slow clients', () => {
  test('a client that stops reading is cut off after --client-stall-timeout, and the agent keeps serving others (case 23)', async () => {
    const stall = await chain.startUserServer({ 'client-stall-timeout': '1s' });
    try {
      const started = Date.now();
      const outcome = new Promise<{ how: string; ms: number }>((resolve) => {
        const req = https.request({ host: '127.0.0.1', port: stall.port, path: `/cluster-a/large?bytes=${256 * MiB}`, ca, servername: 'localhost', agent: false }, (res) => {
          res.pause(); // never reads: the proxy's buffers fill up and the tunnel is paused
          // Once the proxy has given up on it, the client reads again and must find the body cut off.
          void expect.poll(() => stall.logs.join('\n'), { timeout: 15_000 }).toMatch(/did not read the response for 1000 ms/).then(() => {
            const cutAt = Date.now() - started;
            res.on('data', () => {});
            res.on('end', () => resolve({ how: res.complete ? 'end' : 'aborted', ms: cutAt }));
            res.on('aborted', () => resolve({ how: 'aborted', ms: cutAt }));
            res.on('error', () => resolve({ how: 'aborted', ms: cutAt }));
            res.resume();
          });
        });
        req.on('error', () => resolve({ how: 'aborted', ms: Date.now() - started }));
        req.end();
      });
      // The stalled response has filled the path back to the target, so the agent's tunnel is paused.
      // (or the proxy already cut it off, which can come first with a 1 s stall timeout).
      await expect.poll(() => chain.clusters.a.target.blockedMs(`bytes=${256 * MiB}`) > 100 || stall.logs.some((l) => l.includes('did not read the response')), { timeout: 10_000 }).toBe(true);
      const other = await h1(stall.port, ca, '/cluster-a/api', { timeoutMs: 10_000 });
      expect(other.status).toBe(200);
      const { how, ms } = await outcome;
      expect(how).toBe('aborted');
      expect(ms).toBeLessThan(8000);
    } finally {
      await stall.close();
    }
  });
});
