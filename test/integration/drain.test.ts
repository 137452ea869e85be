import { spawn, type ChildProcess } from 'node:child_process';
import http2 from 'node:http2';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { ROOT } from '../harness/certs.ts';
import { chainSettings, startChain, type Chain } from '../harness/chain.ts';

// SIGTERM under load, on the CLI as a child process in front of the real chain.
const CLI = path.join(ROOT, 'src/cli.ts');
const DELAY_MS = 2_000;
const TOKEN = 'drain-SECRET-9876';
const planted = { authorization: `Bearer ${TOKEN}`, cookie: `s=${TOKEN}`, 'x-remote-token': TOKEN };

let chain: Chain;
let ca: Buffer;
beforeAll(async () => {
  chain = await startChain();
  ca = chain.certs.read('ca.crt');
});
afterAll(async () => {
  await chain?.close();
});

interface Started {
  child: ChildProcess;
  port: number;
  healthPort: number;
  output: () => string;
  exit: Promise<number | null>;
}

async function startCli(): Promise<Started> {
  const settings = chainSettings(chain, {
    'health-address': '127.0.0.1',
    'health-port': '0',
    'shutdown-delay': `${DELAY_MS}ms`,
    'shutdown-grace': '10s',
  });
  const child = spawn(process.execPath, [CLI, ...Object.entries(settings).map(([k, v]) => `--${k}=${v}`)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (out += c));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const line = await new Promise<{ port: number; healthPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 20_000);
    child.stdout!.on('data', () => {
      const l = out.split('\n').find((x) => x.includes('user-server listening'));
      if (l) {
        clearTimeout(timer);
        resolve(JSON.parse(l));
      }
    });
  });
  return { child, port: line.port, healthPort: line.healthPort, output: () => out, exit };
}

/**
 * A watch that never ends by itself (10,000 events, 100 ms apart), over a keep-alive HTTP/1.1 connection
 * as client-go keeps them: the server must end the response and then close the connection.
 */
function h1Watch(port: number): Promise<{ complete: boolean; events: number; connectionClosed: boolean; error?: string }> {
  return new Promise((resolve) => {
    const agent = new https.Agent({ keepAlive: true });
    const req = https.request({ host: '127.0.0.1', port, path: `/cluster-a/slow?watch=true&chunks=10000&interval=100&access_token=${TOKEN}`, headers: planted, ca, servername: 'localhost', agent }, (res) => {
      let events = 0;
      const socket = res.socket;
      let socketClosed = false;
      socket.once('close', () => (socketClosed = true));
      res.on('data', (c: Buffer) => (events += c.toString().split('\n').length - 1));
      res.on('end', () => {
        const complete = res.complete;
        // The server closes the connection right after the last chunk; waiting for that is bounded.
        const deadline = Date.now() + 1_500;
        const check = (): void => {
          if (socketClosed || Date.now() > deadline) {
            agent.destroy();
            resolve({ complete, events, connectionClosed: socketClosed });
          } else setTimeout(check, 20);
        };
        check();
      });
      res.on('error', (err) => resolve({ complete: false, events, connectionClosed: false, error: err.message }));
    });
    req.on('error', (err) => resolve({ complete: false, events: 0, connectionClosed: false, error: err.message }));
    req.end();
  });
}

/** The same over HTTP/2: a clean end is END_STREAM, not RST_STREAM. */
function h2Watch(port: number): Promise<{ ended: boolean; rstCode: number | undefined; events: number; goaway: boolean; error?: string }> {
  return new Promise((resolve) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: 'localhost' });
    session.on('error', () => {});
    let goaway = false;
    session.on('goaway', () => (goaway = true));
    const stream = session.request({ ':path': '/1-cluster-b/slow?watch=1&chunks=10000&interval=100', ...planted });
    let events = 0;
    let ended = false;
    let error: string | undefined;
    stream.on('data', (c: Buffer) => (events += c.toString().split('\n').length - 1));
    stream.on('end', () => (ended = true));
    stream.on('error', (err) => (error = err.message));
    stream.on('close', () => {
      session.close();
      const r: { ended: boolean; rstCode: number | undefined; events: number; goaway: boolean; error?: string } = { ended, rstCode: stream.rstCode, events, goaway };
      if (error !== undefined) r.error = error;
      resolve(r);
    });
    stream.end();
  });
}

/**
 * An exec session over SPDY (a raw byte echo behind the target), opened before SIGTERM: it must end with
 * a clean close (FIN), after echoing bytes both before and during the drain.
 */
function upgradedSession(port: number): { echoed: (text: string) => Promise<void>; ended: Promise<{ clean: boolean; error?: string }> } {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
    socket.write(`POST /cluster-a/api/v1/namespaces/ns1/pods/p1/exec?command=sh&stdin=true HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n`);
  });
  let received = '';
  socket.setEncoding('latin1').on('data', (c: string) => (received += c));
  let error: string | undefined;
  socket.on('error', (err) => (error = err.message));
  const ended = new Promise<{ clean: boolean; error?: string }>((resolve) => {
    let gotEnd = false;
    socket.on('end', () => (gotEnd = true));
    socket.on('close', () => resolve(error === undefined ? { clean: gotEnd } : { clean: false, error }));
  });
  const echoed = async (text: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!received.includes('101 Switching Protocols') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    socket.write(text);
    while (!received.includes(text) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (!received.includes(text)) throw new Error(`no echo of ${text}: ${received}`);
  };
  return { echoed, ended };
}

test('SIGTERM under load: readiness fails first, no short request fails, watches and an exec session end cleanly, exit 0', async () => {
  const cli = await startCli();
  const base = { host: '127.0.0.1', port: cli.port, ca, servername: 'localhost' };
  const readyz = async () => (await fetch(`http://127.0.0.1:${cli.healthPort}/readyz`)).status;
  expect(await readyz()).toBe(200);

  const w1 = h1Watch(cli.port);
  const w2 = h2Watch(cli.port);
  const exec = upgradedSession(cli.port);
  await exec.echoed('before-sigterm');

  // Short requests from three keep-alive clients, until the load balancer would have moved away.
  const agent = new https.Agent({ keepAlive: true, maxSockets: 3 });
  let ok = 0;
  const failures: string[] = [];
  let closeAfterSigterm = 0;
  let sigtermAt = Infinity;
  let stopLoad = false;
  const short = (p: string, fresh = false): Promise<string> =>
    new Promise((resolve) => {
      const sentAt = Date.now();
      const req = https.request({ ...base, path: p, headers: planted, agent: fresh ? false : agent }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (res.statusCode === 200 && res.complete) ok++;
          else failures.push(`${p}: ${res.statusCode} ${body.slice(0, 200)}`);
          if (sentAt > sigtermAt && res.headers.connection === 'close') closeAfterSigterm++;
          resolve(body);
        });
        res.on('error', (err) => {
          failures.push(`${p}: ${err.message}`);
          resolve('');
        });
      });
      req.on('error', (err) => {
        failures.push(`${p}: ${err.message}`);
        resolve('');
      });
      req.end();
    });
  const loadDeadline = Date.now() + 30_000;
  const workers = [0, 1, 2].map(async (w) => {
    for (let i = 0; !stopLoad && Date.now() < loadDeadline; i++) {
      await short(i % 2 ? `/cluster-a/api/v1/namespaces/default/pods?access_token=${TOKEN}` : `/1-cluster-b/api/v1/pods/p${w}`);
    }
  });
  while (ok < 30 && Date.now() < loadDeadline) await new Promise((r) => setTimeout(r, 20));

  sigtermAt = Date.now();
  cli.child.kill('SIGTERM');
  let status = await readyz();
  for (let i = 0; status === 200 && i < 50; i++) status = await readyz().catch(() => 0);
  expect(status).toBe(503);
  const okAtReadyzFailure = ok;
  await exec.echoed('while-draining');
  // Still served while the delay runs: the load balancer may not have noticed yet.
  while (ok < okAtReadyzFailure + 30 && Date.now() < sigtermAt + DELAY_MS / 2) await new Promise((r) => setTimeout(r, 20));
  // A slower short request sent just before the listener closes must still finish completely.
  await new Promise((r) => setTimeout(r, Math.max(0, sigtermAt + DELAY_MS - 400 - Date.now())));
  const slow = short('/cluster-a/slow?chunks=5&interval=300', true);
  stopLoad = true;
  await Promise.all(workers);
  expect(await slow, failures.join('\n')).toBe('cluster-a line 0\ncluster-a line 1\ncluster-a line 2\ncluster-a line 3\ncluster-a line 4\n');

  const [h1Result, h2Result, execResult] = await Promise.all([w1, w2, exec.ended]);
  const code = await cli.exit;
  agent.destroy();

  expect(failures).toEqual([]);
  expect(ok).toBeGreaterThan(okAtReadyzFailure);
  expect(closeAfterSigterm).toBeGreaterThan(0);
  expect(h1Result).toMatchObject({ complete: true, connectionClosed: true });
  expect(h1Result.error).toBeUndefined();
  expect(h1Result.events).toBeGreaterThan(0);
  // The session was told to go away (GOAWAY), and its open watch still ended with END_STREAM.
  expect(h2Result).toMatchObject({ ended: true, rstCode: http2.constants.NGHTTP2_NO_ERROR, goaway: true });
  expect(h2Result.error).toBeUndefined();
  expect(h2Result.events).toBeGreaterThan(0);
  expect(execResult).toEqual({ clean: true });
  expect(code).toBe(0);

  const lines = cli.output().split('\n').filter(Boolean);
  for (const l of lines) expect(() => JSON.parse(l), l).not.toThrow();
  const parsed = lines.map((l) => JSON.parse(l));
  expect(parsed.filter((l) => l.endedByShutdown === true && l.kind === 'kube-stream')).toHaveLength(2);
  expect(parsed.find((l) => l.kind === 'upgrade')).toMatchObject({ verb: 'create', resource: 'pods', subresource: 'exec', namespace: 'ns1', name: 'p1', status: 101 });
  expect(cli.output()).not.toContain(TOKEN);
  console.log(`drain: ${ok} short requests ok, ${failures.length} failed; ${closeAfterSigterm} got Connection: close after SIGTERM`);
});
