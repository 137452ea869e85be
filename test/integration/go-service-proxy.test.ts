import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startAgent, type Agent } from '../harness/anp.ts';
import { ROOT } from '../harness/certs.ts';
import { hashedHost, startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { streamedGet, type StreamedResponse } from '../harness/client.ts';
import { startClusterTarget, type ClusterTarget } from '../harness/cluster-target.ts';
import { startProcess, type Managed } from '../harness/processes.ts';

// The user-server's HTTP/2 watches against Go's own HTTP/2 server, set up as the real service-proxy sets
// up its server (test/go/goserviceproxy): Go's stream limit, flow control and graceful shutdown, not
// Node's. A third cluster, `go-cluster`, gets the Go service-proxy, a target and an agent of its own.
const CLUSTER = 'go-cluster';
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
let target: ClusterTarget;
let goProxy: Managed;
let agent: Agent;

beforeAll(async () => {
  chain = await startChain();
  us = await chain.startUserServer({ 'client-stall-timeout': '5s' });
  ca = chain.certs.read('ca.crt');
  const ip = `${chain.clusters.a.ip.split('.').slice(0, 3).join('.')}.16`;
  target = await startClusterTarget(CLUSTER, ip);
  goProxy = startProcess('go-service-proxy', path.join(ROOT, '.cache/tools/goserviceproxy'), [`${ip}:7443`, chain.certs.file('service-proxy.crt'), chain.certs.file('service-proxy.key'), target.url], chain.dir);
  await new Promise<void>((resolve, reject) => {
    goProxy.child.stdout!.once('data', () => resolve());
    goProxy.child.once('exit', (code) => reject(new Error(`goserviceproxy exited ${code}: ${goProxy.log()}`)));
    goProxy.child.once('error', (err) => reject(new Error(`goserviceproxy did not start (run scripts/build-test-deps.sh): ${err.message}`)));
  });
  agent = await startAgent({ certs: chain.certs, dir: chain.dir, name: 'agent-go', server: chain.anp, identifiers: [hashedHost(CLUSTER)], hosts: { [hashedHost(CLUSTER)]: ip } });
});

afterAll(async () => {
  await us?.close();
  await agent?.stop();
  await goProxy?.stop();
  await target?.close();
  await chain?.close();
});

/** A watch to the Go-served cluster, with the protocol its service-proxy hop used. */
async function watch(pathAndQuery: string, onResponse?: Parameters<typeof streamedGet>[3]): Promise<{ status: number; proto: string | undefined; lines: number; how: StreamedResponse['how'] }> {
  const r = await streamedGet(us.port, ca, `/${CLUSTER}${pathAndQuery}`, onResponse);
  return { status: r.status, proto: r.headers['x-service-proxy-proto'] as string | undefined, lines: r.lines, how: r.how };
}

const dials = (): Promise<number> => us.server.metrics.successfulDials();

describe('watches over HTTP/2 to a Go service-proxy', () => {
  test('50 concurrent watches share one tunnel as HTTP/2 streams, and each streams to the end', async () => {
    const before = await dials();
    const results = await Promise.all(Array.from({ length: 50 }, (_v, i) => watch(`/slow?watch=true&chunks=3&interval=100&n=${i}`)));
    expect(results.every((r) => r.status === 200 && r.lines === 3 && r.how === 'complete')).toBe(true);
    expect(new Set(results.map((r) => r.proto))).toEqual(new Set(['HTTP/2.0']));
    expect((await dials()) - before).toBeLessThanOrEqual(1);
  });

  test('short requests stay on HTTP/1.1', async () => {
    const r = await watch('/api/v1/pods');
    expect(r).toMatchObject({ status: 200, proto: 'HTTP/1.1', how: 'complete' });
  });

  test('a client that stops reading stalls only its own stream at the Go server; a watch beside it streams to the end', async () => {
    let resume: (() => void) | undefined;
    const stalled = watch(`/large?bytes=${256 * 1024 * 1024}&watch=true`, (res) => {
      res.pause();
      resume = () => res.resume();
    });
    await expect.poll(() => resume !== undefined).toBe(true);
    // Full all the way: the target's writes no longer drain.
    await expect.poll(() => target.blockedMs('/large'), { timeout: 10_000 }).toBeGreaterThan(200);
    expect(await watch('/slow?watch=true&chunks=20&interval=50')).toMatchObject({ status: 200, proto: 'HTTP/2.0', lines: 20, how: 'complete' });
    expect(us.logs.join('\n')).not.toMatch(/did not read the response/);
    await expect.poll(() => us.logs.join('\n'), { timeout: 15_000 }).toMatch(/did not read the response for 5000 ms/);
    resume!();
    expect((await stalled).how).toBe('aborted');
  });

  test('an exec-style SPDY upgrade passes Go\'s ReverseProxy and its HTTP/1.1 hop byte for byte', async () => {
    const socket = tls.connect({ host: '127.0.0.1', port: us.port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
    await new Promise((r) => socket.once('secureConnect', r));
    socket.write(`POST /${CLUSTER}/api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n`);
    let got = '';
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (got += c));
    await expect.poll(() => got).toMatch(/\r\n\r\n/);
    expect(got.slice(0, 12)).toBe('HTTP/1.1 101');
    const bytes = 'spdy-frames\u0000\u00ff';
    got = '';
    socket.write(Buffer.from(bytes, 'latin1'));
    await expect.poll(() => got).toBe(bytes);
    socket.destroy();
  });

  // Last: it stops the Go service-proxy.
  test('a service-proxy that shuts down gracefully (GOAWAY) lets the open watches run to their end', async () => {
    const open = watch('/slow?watch=true&chunks=15&interval=100');
    await expect.poll(() => target.requests.filter((r) => r.url.includes('chunks=15')).length).toBe(1);
    const stopped = goProxy.stop();
    const r = await open;
    expect(r).toMatchObject({ status: 200, proto: 'HTTP/2.0', lines: 15, how: 'complete' });
    await stopped;
  });
});
