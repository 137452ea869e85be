import { afterAll, beforeAll, expect, test } from 'vitest';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';

let chain: Chain;
let us: RunningUserServer;
beforeAll(async () => {
  chain = await startChain();
  us = await chain.startUserServer();
});
afterAll(async () => {
  await us?.close();
  await chain?.close();
});

test('smoke', async () => {
  const ca = chain.certs.read('ca.crt');
  const r = await h1(us.port, ca, '/cluster-a/api/v1/pods?x=%2F');
  console.log(r.status, r.text, us.logs.slice(-3));
  const r2 = await h2(us.port, ca, '/1-cluster-b/api/v1/pods?x=%2F');
  console.log(r2.status, r2.text);
  expect(r.status).toBe(200);
});
