import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startChain, type Chain, type RunningUserServer } from '../harness/chain.ts';
import { startKube, type KubeCluster, type KubeStack } from '../harness/kube.ts';
import { startKubectl, writeKubeconfig } from '../harness/kubectl.ts';

// A real kubectl watch (HTTP/2) through a user-server that drains: the watch ends as a complete response
// (END_STREAM), which client-go takes as the server closing the watch normally. kubectl exits 0 either
// way; a reset stream differs in client-go turning it into an Error event, visible at -v=6.

const A = 'cluster-a';

let kube: KubeStack;
let chain: Chain;
let us: RunningUserServer;
let a: KubeCluster;
let kubeconfig: string;

beforeAll(async () => {
  kube = await startKube([A], 1);
  a = kube.clusters[A]!;
  chain = await startChain({ strategies: 'destHost', kube: { targets: { [A]: a.url }, ca: kube.ca } });
  us = await chain.startUserServer();
  kubeconfig = writeKubeconfig(path.join(kube.dir, 'kubeconfig-drain'), chain.certs.file('ca.crt'), [{ name: A, server: `${us.url}/${A}`, token: a.userToken }]);
}, 240_000);

afterAll(async () => {
  await us?.close();
  await chain?.close();
  await kube?.close();
});

test('kubectl get pods -w ends normally when the user-server drains', async () => {
  const watch = startKubectl(kubeconfig, ['--context', A, 'get', 'pods', '-w', '-v=6']);
  try {
    await watch.waitFor(new RegExp(`^${a.pods[0]}\\s.*Running`, 'm'));
    // kubectl lists, then watches: at -v=6 it logs the watch request once its response headers came back.
    await expect.poll(() => watch.stderr(), { timeout: 20_000 }).toMatch(/watch=true[^\n]*200 OK/);
    await us.server.shutdown(0, 2_000);
    const line = us.logs.map((l) => JSON.parse(l)).find((l) => l.kind === 'kube-stream' && l.verb === 'watch');
    expect(line).toMatchObject({ resource: 'pods', endedByShutdown: true, status: 200 });
    const r = await watch.done(10_000);
    expect(r.code).toBe(0);
    // At -v=6 a reset stream shows as an Error event kubectl cannot print as a table ("unable to decode");
    // a complete end shows nothing.
    expect(r.stderr.split('\n').filter((l) => /decode|watch stream|stream error|INTERNAL_ERROR/i.test(l))).toEqual([]);
  } finally {
    await watch.kill();
  }
});
