import http2 from 'node:http2';
import https from 'node:https';
import { describe, expect, test } from 'vitest';
import { useChain, type ChainWithServer } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';

// What a cancelled or failed request costs the pooled tunnels, through the real chain (ANP proxy-server and
// agents, the service-proxy double): cancelling must not churn dials, and a tunnel that dies under a
// request gets a safe request sent again, nothing else.
let c: ChainWithServer;
useChain((x) => (c = x));

const P = 'cluster_proxy_user_server_';
async function counter(name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = c.us.server.metrics.registry.getSingleMetric(`${P}${name}`);
  if (metric === undefined) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  return values.filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);
}
const dials = (): Promise<number> => counter('tunnel_dials_total', { outcome: 'success' });
const accessLine = (reqId: string): Record<string, any> | undefined =>
  c.us.logs.map((l) => JSON.parse(l)).find((l) => l.reqId === reqId && (l.msg === 'request' || l.msg === 'request failed'));

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One HTTP/1.1 GET whose client reads the response headers and the first body chunk, then closes the connection. */
function getThenVanish(path: string, reqId: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: c.us.port, path, ca: c.ca, servername: 'localhost', agent: false, headers: { 'x-request-id': reqId } }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end();
  });
}

describe('a cancelled request does not cost a tunnel', () => {
  test('HTTP/2 client opening and cancelling 400 requests: a handful of dials, not hundreds; its requests end, other clients unaffected', async () => {
    // Warm the pool to its 64 tunnels (--max-tunnels-per-cluster): cancelled requests left to finish hold
    // their tunnels a little longer, so the loop's 16 client streams can keep more than 16 busy.
    await Promise.all(Array.from({ length: 64 }, () => h1(c.us.port, c.ca, '/cluster-a/slow?chunks=2&interval=100')));
    const dialsBefore = await dials();
    const openBefore = await counter('tunnels_open');
    const keptBefore = await counter('tunnels_kept_after_cancel_total');

    const session = http2.connect(`https://127.0.0.1:${c.us.port}`, { ca: c.ca, servername: 'localhost' });
    session.on('error', () => {});
    let sent = 0;
    let afterHeaders = 0;
    const one = (): Promise<void> =>
      new Promise((resolve) => {
        const n = sent++;
        const stream = session.request({ ':path': `/cluster-a/slow?chunks=3&interval=30&n=${n}` }, { endStream: true });
        stream.on('error', () => {});
        stream.on('close', () => resolve());
        // Half are cancelled as soon as they are sent (queued or in flight upstream), half once the
        // response headers arrived (the response body still coming).
        if (n % 2 === 0) setImmediate(() => stream.close(http2.constants.NGHTTP2_CANCEL));
        else
          stream.once('response', () => {
            afterHeaders++;
            stream.close(http2.constants.NGHTTP2_CANCEL);
          });
      });
    const worker = async (): Promise<void> => {
      while (sent < 400) await one();
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    session.destroy();
    expect(afterHeaders).toBe(200);

    // Every cancelled request still finishes upstream (response dropped) and gives back its slot.
    await until(async () => (await counter('requests_in_flight')) === 0, 'the cancelled requests to finish');
    const kept = (await counter('tunnels_kept_after_cancel_total')) - keptBefore;
    const newDials = (await dials()) - dialsBefore;
    // Tunnels torn down: what was open, plus what was dialled, minus what is still open. The pool may
    // still grow to its 64 if the warm-up left it short, but nothing is destroyed and dialled again.
    const tornDown = openBefore + newDials - (await counter('tunnels_open'));
    expect(kept).toBeGreaterThan(100);
    expect(tornDown).toBeLessThanOrEqual(2);
    expect(newDials).toBeLessThanOrEqual(64 - openBefore + 2);
    const ok = await h2(c.us.port, c.ca, '/cluster-a/api');
    expect(ok.status).toBe(200);
  });

  test('HTTP/2 client cancelling requests whose bodies never ended: each costs a tunnel, so the connection gets GOAWAY ENHANCE_YOUR_CALM at --cancelled-tunnels-per-connection', async () => {
    await Promise.all(Array.from({ length: 4 }, () => h1(c.us.port, c.ca, '/cluster-a/slow?chunks=2&interval=50')));
    const dialsBefore = await dials();
    const session = http2.connect(`https://127.0.0.1:${c.us.port}`, { ca: c.ca, servername: 'localhost' });
    session.on('error', () => {});
    const goaway = new Promise<number>((resolve) => session.once('goaway', (code: number) => resolve(code)));
    let sent = 0;
    let refused = 0;
    // A request that is sent upstream (its headers and a first body chunk) and cancelled while its body is
    // still open: the upstream request can never complete, so its HTTP/1.1 tunnel must go.
    const one = (): Promise<void> =>
      new Promise((resolve) => {
        sent++;
        const stream = session.request({ ':method': 'POST', ':path': '/cluster-a/echo' });
        stream.on('error', () => {});
        stream.on('close', () => resolve());
        stream.write('partial body');
        // destroy() resets the stream without END_STREAM (close() would end the body first).
        stream.once('response', () => stream.destroy());
      });
    const deadline = Date.now() + 20_000;
    while (!session.closed && !session.destroyed && Date.now() < deadline && sent < 200) {
      try {
        await one();
      } catch {
        refused++;
      }
    }
    expect(await goaway).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    session.destroy();
    // 32 is the default budget; the last few may have been sent before the GOAWAY arrived.
    expect(sent).toBeGreaterThanOrEqual(32);
    expect(sent).toBeLessThanOrEqual(40);
    expect(refused).toBe(0);
    expect((await dials()) - dialsBefore).toBeLessThanOrEqual(40);
    expect(c.us.logs.some((l) => l.includes('its cancelled requests cost too many tunnels'))).toBe(true);
    // The budget is per connection: a new one is served.
    expect((await h2(c.us.port, c.ca, '/cluster-a/api')).status).toBe(200);
  });

  test('HTTP/1.1 client vanishing mid-body: a small remainder is read and dropped and the tunnel kept; one beyond --cancelled-drain-bytes costs its tunnel', async () => {
    await h1(c.us.port, c.ca, '/cluster-a/api');
    const kept = await counter('tunnels_kept_after_cancel_total');
    await getThenVanish('/cluster-a/slow?chunks=4&interval=60', 'vanish-small');
    await until(() => accessLine('vanish-small') !== undefined, 'the access line of the small one');
    expect(accessLine('vanish-small')).toMatchObject({ clientGone: true, drainedAfterCancel: true });
    expect(await counter('tunnels_kept_after_cancel_total')).toBe(kept + 1);

    // 64 MiB: far beyond the 1 MiB default, so the drain stops and undici tears the tunnel down.
    await getThenVanish('/cluster-a/large?bytes=67108864', 'vanish-large');
    await until(() => accessLine('vanish-large') !== undefined, 'the access line of the large one');
    expect(accessLine('vanish-large')).toMatchObject({ clientGone: true });
    expect(accessLine('vanish-large')!.drainedAfterCancel).toBeUndefined();
    expect(await counter('tunnels_kept_after_cancel_total')).toBe(kept + 1);
  });
});

describe('a pooled tunnel that dies as a request is sent', () => {
  test('a GET is sent once more on another tunnel and succeeds; the client never sees the failure', async () => {
    const retries = await counter('tunnel_retries_total');
    const r = await h1(c.us.port, c.ca, '/cluster-a/api/v1/pods?limit=1', { headers: { 'x-test-drop-connection': 'get-1', 'x-request-id': 'retry-get' } });
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({ cluster: 'cluster-a', url: '/api/v1/pods?limit=1' });
    expect(await counter('tunnel_retries_total')).toBe(retries + 1);
    const seen = c.chain.clusters.a.serviceProxy.received.filter((q) => q.headers['x-test-drop-connection'] === 'get-1');
    expect(seen).toHaveLength(2);
    await until(() => accessLine('retry-get') !== undefined, 'the access line');
    expect(accessLine('retry-get')).toMatchObject({ status: 200, retried: true });
  });

  test('a POST, which may have taken effect, is never sent twice: 502 Status', async () => {
    const retries = await counter('tunnel_retries_total');
    const r = await h1(c.us.port, c.ca, '/cluster-a/api/v1/namespaces/x/configmaps', { method: 'POST', body: '{"kind":"ConfigMap"}', headers: { 'content-type': 'application/json', 'x-test-drop-connection': 'post-1' } });
    expect(r.status).toBe(502);
    expect(r.json()).toMatchObject({ kind: 'Status', code: 502, reason: 'BadGateway' });
    expect(r.json().message).toMatch(/tunnel closed before the managed cluster answered/);
    expect(c.chain.clusters.a.serviceProxy.received.filter((q) => q.headers['x-test-drop-connection'] === 'post-1')).toHaveLength(1);
    expect(await counter('tunnel_retries_total')).toBe(retries);
  });

  test('a GET whose second tunnel dies too gets 502: one retry, no more', async () => {
    const retries = await counter('tunnel_retries_total');
    const r = await h1(c.us.port, c.ca, '/cluster-a/api', { headers: { 'x-test-drop-connection': 'get-twice', 'x-test-drop-times': '2' } });
    expect(r.status).toBe(502);
    expect(r.json()).toMatchObject({ kind: 'Status', code: 502, reason: 'BadGateway' });
    expect(c.chain.clusters.a.serviceProxy.received.filter((q) => q.headers['x-test-drop-connection'] === 'get-twice')).toHaveLength(2);
    expect(await counter('tunnel_retries_total')).toBe(retries + 1);
  });
});

test('an HTTP/2 upload reset mid-body is cancelled upstream: the cut-off body never reaches the cluster as a whole one', async () => {
  const target = c.chain.clusters.a.target;
  for (let i = 0; i < 5; i++) {
    const id = `cut-upload-${i}`;
    const session = http2.connect(`https://127.0.0.1:${c.us.port}`, { ca: c.ca, servername: 'localhost' });
    session.on('error', () => {});
    const stream = session.request({ ':method': 'POST', ':path': '/cluster-a/echo-sha', 'x-request-id': id });
    stream.on('error', () => {});
    stream.write(Buffer.alloc(1000, 1));
    await until(() => target.requests.some((r) => r.headers['x-request-id'] === id), 'the upload to reach the target');
    stream.destroy();
    await until(() => accessLine(id) !== undefined, 'the access line');
    expect(accessLine(id)).toMatchObject({ clientGone: true });
    session.destroy();
  }
  // Give a cut-off upload time to arrive, were it (wrongly) sent on as complete.
  await new Promise((r) => setTimeout(r, 300));
  for (let i = 0; i < 5; i++) expect(target.bodiesCompleted.has(`cut-upload-${i}`)).toBe(false);
});
