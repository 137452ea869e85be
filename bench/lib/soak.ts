import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import { Agent as UndiciAgent, request } from 'undici';
import WebSocket from 'ws';
import { metricValue, startAgent, type Agent } from '../../test/harness/anp.ts';
import { chainSettings, hashedHost, startChain, type Chain } from '../../test/harness/chain.ts';
import type { AnpMode } from '../../test/harness/anp.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = path.join(ROOT, 'src/cli.ts');

export interface SoakOptions {
  seconds: number;
  /** Agent of cluster-a killed and started again this often (0: never). */
  agentRestartEverySeconds: number;
  sampleEverySeconds: number;
  mode?: AnpMode;
  /** Concurrent short-request loops, watches held open, `logs -f` streams, exec loops. */
  load?: { shortLoops: number; watches: number; logStreams: number; execLoops: number };
  onSample?: (s: SoakSample) => void;
}

export interface SoakSample {
  /** Seconds since the load started. */
  t: number;
  rssMiB: number;
  fds: number;
  tunnelsOpen: number;
  /** Completed operations and failures so far, all kinds together. */
  ops: number;
  failures: number;
  watchesOpen: number;
}

export interface SoakResult {
  samples: SoakSample[];
  ops: Record<'short' | 'watchEvents' | 'watchOpens' | 'logLines' | 'execRoundTrips', number>;
  /** Failures while cluster-a's agent was down or coming back (expected: 503, aborted streams) and at any other time. */
  failures: { duringRestart: Record<string, number>; otherwise: Record<string, number> };
  agentRestarts: number;
  /** Seconds into the run at which the agent was killed. */
  restartsAt: number[];
  /** Client operations that did not settle within their deadline, by kind and cluster. */
  hung: Record<string, number>;
  mode: AnpMode;
}

const LOAD = { shortLoops: 8, watches: 60, logStreams: 10, execLoops: 2 };
/** How long after an agent restart failures on its cluster count as caused by it (it reconnects within ~1 s). */
const RESTART_WINDOW_MS = 8_000;
const OP_DEADLINE_MS = 30_000;

/**
 * Mixed load against a user-server process through a real ANP chain (both clusters; cluster-a's agent
 * restarted on a schedule): short GETs over HTTP/1.1, watches and `logs -f` over HTTP/2 (re-opened when
 * they end, as client-go re-watches), exec sessions over WebSocket. Samples the server's RSS, open file
 * descriptors and tunnels. The server runs in its own process so that only its resources are measured.
 */
export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const load = opts.load ?? LOAD;
  const chain = await startChain({ strategies: 'destHost', ...(opts.mode === undefined ? {} : { mode: opts.mode }) });
  let server: ChildProcess | undefined;
  const stop: (() => Promise<void>)[] = [];
  try {
    const { child, port, healthPort } = await startServerProcess(chain);
    server = child;
    const ca = chain.certs.read('ca.crt');
    const base = `https://127.0.0.1:${port}`;
    const started = Date.now();
    const deadline = started + opts.seconds * 1000;
    const running = (): boolean => Date.now() < deadline;
    let lastRestart = -Infinity;
    const result: SoakResult = {
      samples: [],
      ops: { short: 0, watchEvents: 0, watchOpens: 0, logLines: 0, execRoundTrips: 0 },
      failures: { duringRestart: {}, otherwise: {} },
      agentRestarts: 0,
      restartsAt: [],
      hung: {},
      mode: chain.mode,
    };
    const hung = (cluster: string, what: string): void => {
      const k = `${what} ${cluster}`;
      result.hung[k] = (result.hung[k] ?? 0) + 1;
    };
    const fail = (cluster: string, what: string): void => {
      const bucket = cluster === 'cluster-a' && Date.now() - lastRestart < RESTART_WINDOW_MS ? result.failures.duringRestart : result.failures.otherwise;
      bucket[what] = (bucket[what] ?? 0) + 1;
    };
    const clusters = ['cluster-a', '1-cluster-b'];

    const dispatcher = new UndiciAgent({ connect: { ca, servername: 'localhost' }, connections: load.shortLoops });
    stop.push(() => dispatcher.close());
    const shortLoop = async (i: number): Promise<void> => {
      const cluster = clusters[i % 2]!;
      while (running()) {
        try {
          const r = await request(`${base}/${cluster}/api/v1/namespaces/soak/pods?limit=${i}`, { dispatcher, headersTimeout: OP_DEADLINE_MS, bodyTimeout: OP_DEADLINE_MS });
          await r.body.dump();
          if (r.statusCode === 200) result.ops.short++;
          else fail(cluster, `short ${r.statusCode}`);
        } catch (err) {
          fail(cluster, `short ${(err as { code?: string }).code ?? 'error'}`);
          if ((err as { code?: string }).code === 'UND_ERR_HEADERS_TIMEOUT') hung(cluster, 'short');
        }
      }
    };

    const session = http2.connect(base, { ca, servername: 'localhost' });
    session.on('error', () => {});
    stop.push(async () => void session.destroy());
    let watchesOpen = 0;
    // A watch (or `logs -f`) stream: one event a second; re-opened after it ends or fails, as client-go does.
    const streamLoop = async (i: number, kind: 'watch' | 'log'): Promise<void> => {
      const cluster = clusters[i % 2]!;
      const p = kind === 'watch' ? `/${cluster}/slow?watch=true&chunks=100000&interval=1000&n=${i}` : `/${cluster}/api/v1/namespaces/soak/pods/p${i}/slow/log?follow=true&chunks=100000&interval=1000`;
      while (running()) {
        await new Promise<void>((resolve) => {
          const stream = session.request({ ':path': p }, { endStream: true });
          let opened = false;
          let lastByte = Date.now();
          const stall = setInterval(() => {
            if (Date.now() - lastByte > OP_DEADLINE_MS) {
              hung(cluster, opened ? kind : `${kind} headers`);
              stream.close(http2.constants.NGHTTP2_CANCEL);
            }
            if (!running()) stream.close(http2.constants.NGHTTP2_CANCEL);
          }, 500);
          stream.on('response', (h) => {
            if (h[':status'] !== 200) fail(cluster, `${kind} ${h[':status']}`);
            else {
              opened = true;
              watchesOpen++;
              result.ops.watchOpens++;
            }
          });
          stream.on('data', () => {
            lastByte = Date.now();
            if (opened) result.ops[kind === 'watch' ? 'watchEvents' : 'logLines']++;
          });
          stream.on('error', () => {});
          stream.on('close', () => {
            clearInterval(stall);
            if (opened) watchesOpen--;
            if (running() && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR && stream.rstCode !== http2.constants.NGHTTP2_CANCEL) fail(cluster, `${kind} reset`);
            resolve();
          });
          stream.resume();
        });
        // client-go waits before re-watching after an error; a short pause keeps a dead agent from being hammered.
        if (running()) await sleep(200);
      }
    };

    const execLoop = async (i: number): Promise<void> => {
      const cluster = clusters[i % 2]!;
      while (running()) {
        await new Promise<void>((resolve) => {
          const ws = new WebSocket(`wss://127.0.0.1:${port}/${cluster}/api/v1/namespaces/soak/pods/p/exec?command=sh&stdin=true&stdout=true`, ['v5.channel.k8s.io'], { ca, servername: 'localhost' } as WebSocket.ClientOptions);
          let left = 50;
          let phase = 'connect';
          const timer = setTimeout(() => {
            hung(cluster, `exec ${phase}`);
            ws.terminate();
          }, OP_DEADLINE_MS);
          ws.on('open', () => {
            phase = 'echo';
            ws.send(Buffer.from('\x00echo soak\n'));
          });
          ws.on('message', () => {
            result.ops.execRoundTrips++;
            if (--left > 0 && running()) ws.send(Buffer.from('\x00echo soak\n'));
            else ws.close();
          });
          let settled = false;
          const settle = (): void => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            resolve();
          };
          // With this listener ws leaves the refused handshake to us: it neither aborts nor emits 'close'.
          ws.on('unexpected-response', (req, res) => {
            fail(cluster, `exec ${res.statusCode}`);
            res.resume();
            req.destroy();
            settle();
          });
          ws.on('error', () => {});
          ws.on('close', (code) => {
            if (left > 0 && running() && code !== 1000 && !settled) fail(cluster, `exec closed ${code}`);
            settle();
          });
        });
      }
    };

    let agent: Agent = chain.agents.a;
    const restarter = async (): Promise<void> => {
      if (opts.agentRestartEverySeconds <= 0) return;
      for (;;) {
        const next = started + (result.agentRestarts + 1) * opts.agentRestartEverySeconds * 1000;
        if (next >= deadline) return;
        await sleep(next - Date.now());
        lastRestart = Date.now();
        result.restartsAt.push(Math.round((lastRestart - started) / 1000));
        await agent.proc.stop();
        agent = await startAgent({
          certs: chain.certs,
          dir: chain.dir,
          name: `agent-a-${result.agentRestarts + 1}`,
          server: chain.anp,
          identifiers: [hashedHost(chain.clusters.a.name)],
          hosts: { [hashedHost(chain.clusters.a.name)]: chain.clusters.a.ip },
        });
        lastRestart = Date.now();
        result.agentRestarts++;
      }
    };
    stop.push(() => agent.stop());

    const sampler = async (): Promise<void> => {
      while (running()) {
        await sleep(Math.min(opts.sampleEverySeconds * 1000, deadline - Date.now()));
        const s = await sample(child.pid!, healthPort, (Date.now() - started) / 1000, result, watchesOpen);
        result.samples.push(s);
        opts.onSample?.(s);
      }
    };

    result.samples.push(await sample(child.pid!, healthPort, 0, result, 0));
    await Promise.all([
      ...Array.from({ length: load.shortLoops }, (_, i) => shortLoop(i)),
      ...Array.from({ length: load.watches }, (_, i) => streamLoop(i, 'watch')),
      ...Array.from({ length: load.logStreams }, (_, i) => streamLoop(i, 'log')),
      ...Array.from({ length: load.execLoops }, (_, i) => execLoop(i)),
      restarter(),
      sampler(),
    ]);
    // Everything is closed on the client side now; what the server still holds after a moment is a leak.
    await sleep(2_000);
    const end = await sample(child.pid!, healthPort, (Date.now() - started) / 1000, result, watchesOpen);
    result.samples.push(end);
    opts.onSample?.(end);
    return result;
  } finally {
    for (const s of stop.reverse()) await s().catch(() => {});
    if (server !== undefined && server.exitCode === null) {
      const exited = new Promise((r) => server!.once('exit', r));
      server.kill('SIGKILL');
      await exited;
    }
    await chain.close();
  }
}

async function sample(pid: number, healthPort: number, t: number, result: SoakResult, watchesOpen: number): Promise<SoakSample> {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const metrics = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
  const count = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
  return {
    t: Math.round(t),
    rssMiB: Math.round(rssKiB / 102.4) / 10,
    fds: readdirSync(`/proc/${pid}/fd`).length,
    tunnelsOpen: metricValue(metrics, 'cluster_proxy_user_server_tunnels_open'),
    ops: Object.values(result.ops).reduce((a, b) => a + b, 0),
    failures: count(result.failures.duringRestart) + count(result.failures.otherwise),
    watchesOpen,
  };
}

/** The CLI as deployed, pointed at the chain, access log off as under load in production. */
async function startServerProcess(chain: Chain): Promise<{ child: ChildProcess; port: number; healthPort: number }> {
  const settings = chainSettings(chain, { 'health-address': '127.0.0.1', 'health-port': '0', 'log-level': 'info', 'access-log': 'false' });
  const child = spawn(process.execPath, [CLI, ...Object.entries(settings).map(([k, v]) => `--${k}=${v}`)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out = (out + c).slice(-20_000)));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (out = (out + c).slice(-20_000)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`user-server did not start: ${out}`)), 20_000);
    child.once('exit', (code) => reject(new Error(`user-server exited ${code}: ${out}`)));
    child.stdout!.on('data', () => {
      const l = out.split('\n').find((x) => x.includes('user-server listening'));
      if (l === undefined) return;
      clearTimeout(timer);
      const { port, healthPort } = JSON.parse(l) as { port: number; healthPort: number };
      resolve({ child, port, healthPort });
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, ms)));
}
