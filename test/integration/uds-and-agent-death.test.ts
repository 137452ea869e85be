import http2 from 'node:http2';
import https from 'node:https';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';

// The proxy-server's frontend on a Unix socket (case 2), and an agent that dies mid-response (case 16).
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
beforeAll(async () => {
  chain = await startChain({ uds: true });
  us = await chain.startUserServer();
  ca = chain.certs.read('ca.crt');
});
afterAll(async () => {
  await us?.close();
  await chain?.close();
});

describe('Unix socket frontend (case 2)', () => {
  test('requests to both clusters succeed through the socket', async () => {
    expect(chain.anp.udsPath).toBeDefined();
    const a = await h1(us.port, ca, '/cluster-a/api/v1/pods?x=1');
    const b = await h2(us.port, ca, '/1-cluster-b/api/v1/pods?x=2');
    expect([a.status, b.status]).toEqual([200, 200]);
    expect(a.json()).toMatchObject({ cluster: 'cluster-a', url: '/api/v1/pods?x=1' });
    expect(b.json()).toMatchObject({ cluster: '1-cluster-b', url: '/api/v1/pods?x=2' });
  });
});

describe('agent killed mid-response (case 16)', () => {
  test('HTTP/1.1: the client connection is aborted, never a clean end; HTTP/2: the stream is reset', async () => {
    const h1Outcome = new Promise<string>((resolve) => {
      const req = https.request({ host: '127.0.0.1', port: us.port, path: '/1-cluster-b/slow?watch=true&chunks=1000&interval=50', ca, servername: 'localhost', agent: false }, (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve('clean end'));
        res.on('aborted', () => resolve('aborted'));
        res.on('error', () => resolve('aborted'));
      });
      req.on('error', () => resolve('aborted'));
      req.end();
    });
    const h2Outcome = new Promise<string>((resolve) => {
      const session = http2.connect(`https://127.0.0.1:${us.port}`, { ca, servername: 'localhost' });
      session.on('error', () => {});
      const stream = session.request({ ':path': '/1-cluster-b/slow?watch=true&chunks=1000&interval=50' });
      stream.on('data', () => {});
      stream.on('end', () => {
        resolve(stream.rstCode === http2.constants.NGHTTP2_NO_ERROR ? 'clean end' : 'reset');
        session.close();
      });
      stream.on('error', () => {
        resolve('reset');
        session.destroy();
      });
      stream.on('close', () => resolve(stream.rstCode === http2.constants.NGHTTP2_NO_ERROR ? 'clean end' : 'reset'));
    });
    // Let both streams deliver data, then kill agent b without warning.
    await new Promise((r) => setTimeout(r, 500));
    chain.agents.b.proc.child.kill('SIGKILL');
    expect(await h1Outcome).toBe('aborted');
    expect(await h2Outcome).toBe('reset');
    // Cluster a, on the other agent, still answers.
    expect((await h1(us.port, ca, '/cluster-a/api')).status).toBe(200);
  });
});
