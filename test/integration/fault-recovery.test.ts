import { readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import WebSocket from 'ws';
import { ANP_VERSION } from '../harness/anp.ts';
import { ROOT } from '../harness/certs.ts';
import { type Chain, type RunningUserServer, useChain } from '../harness/chain.ts';
import { h1, h2 } from '../harness/client.ts';

// After each fault on the path (agent killed or stopped mid-stream, agent killed mid-upgrade, proxy-server
// restarted, target reset mid-body, client gone mid-stream), in the frontend mode of this vitest project:
// every client call settles, and the user-server's open file descriptors, open tunnels and RSS are back to
// their baseline within 5 s. The user-server runs in this process, so /proc/self/fd and the RSS are its
// own, plus the chain's Node doubles'. Their keep-alive sockets close on their own timers and blur the
// total, so the user-server's own sockets (its clients' connections and its connections to ANP) are also
// counted apart, and must come back exactly.
// FAULT_REPORT=1 writes the measurements to bench/results/fault-recovery.md (this mode's section).
let chain: Chain;
let us: RunningUserServer;
let ca: Buffer;
useChain((c) => ({ chain, us, ca } = c), {}, {
  // Idle pooled tunnels close within a second, so that a baseline is taken with an empty pool and a
  // tunnel left open by a fault shows as one.
  'idle-tunnel-timeout': '1s',
});

const SETTLE_DEADLINE_MS = 10_000;
const RECOVERY_DEADLINE_MS = 5_000;
/** File descriptors that may come and go by themselves: keep-alive sockets of the doubles and the test's own clients closing on their timers. */
const FD_TOLERANCE = 4;
const RSS_TOLERANCE = 30 * 1024 * 1024;

interface Sample {
  fds: number;
  /** Open TCP connections to the user-server's port, both ends (its clients run in this process too). */
  front: number;
  /** Its open TCP connections to the proxy-server's frontend. */
  anp: number;
  tunnels: number;
  rss: number;
}

const sample = async (): Promise<Sample> => {
  const fds = readdirSync('/proc/self/fd');
  return {
    fds: fds.length,
    ...userServerSockets(fds),
    tunnels: await tunnelsOpen(),
    rss: process.memoryUsage().rss,
  };
};

/** The gauge alone: serialising the whole registry (Node's process metrics too) every poll would itself grow the RSS. */
async function tunnelsOpen(): Promise<number> {
  const gauge = us.server.metrics.registry.getSingleMetric('cluster_proxy_user_server_tunnels_open');
  if (gauge === undefined) throw new Error('no tunnels_open gauge');
  return (await gauge.get()).values[0]?.value ?? 0;
}

/** Finds the sockets among `fds` by inode in the kernel's TCP tables; listening sockets do not count. */
function userServerSockets(fds: string[]): { front: number; anp: number } {
  const inodes = new Set<string>();
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m !== null) inodes.add(m[1]!);
    } catch {
      // Closed since it was listed.
    }
  }
  const counts = { front: 0, anp: 0 };
  for (const table of ['/proc/self/net/tcp', '/proc/self/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] === '0A' || !inodes.has(f[9]!)) continue;
      const port = (address: string): number => parseInt(address.slice(address.lastIndexOf(':') + 1), 16);
      if (port(f[1]!) === us.port || port(f[2]!) === us.port) counts.front++;
      else if (port(f[2]!) === chain.anp.frontendPort) counts.anp++;
    }
  }
  return counts;
}

/**
 * Connections to ANP the user-server may keep with no tunnel open: none in http-connect mode (a connection
 * per tunnel); in gRPC mode its bounded set, which a fault may have emptied and later traffic fills again.
 */
const idleAnpConnections = (baseline: number): number => (chain.mode === 'grpc' ? us.config.grpc.connections : baseline);

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return Date.now() - started;
}

/** The pool is empty and the user-server holds no tunnel: the state every baseline is taken in. */
const quiet = (): Promise<number> => until(async () => (await sample()).tunnels === 0, 'the idle tunnels to close', 10_000);

type Outcome = 'complete' | 'aborted' | 'reset' | 'closed';

interface Row {
  fault: string;
  outcomes: Outcome[];
  settledMs: number;
  recoveredMs: number;
  before: Sample;
  after: Sample;
}
const rows: Row[] = [];

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
/**
 * The heap in use after a full collection, for the report only: RSS hardly ever shrinks, so a growth of it
 * over the run says little on its own. (The harness keeps every log line of the user-server, which grows too.)
 */
const heapAfterGc = (): number => {
  gc();
  return process.memoryUsage().heapUsed;
};
const heap: { first?: number; last?: number } = {};

/**
 * Takes a baseline, lets `run` start its client calls and inject the fault (it returns when the fault is
 * in, with the calls' outcomes), then checks that every call settles and the resources come back, and
 * records how long each took.
 */
async function fault(name: string, run: () => Promise<Promise<Outcome>[]>): Promise<Row> {
  await quiet();
  heap.first ??= heapAfterGc();
  const before = await sample();
  const calls = await run();
  const faultAt = Date.now();
  let deadline: NodeJS.Timeout | undefined;
  const outcomes = await Promise.race([
    Promise.all(calls),
    new Promise<never>((_, reject) => (deadline = setTimeout(() => reject(new Error(`${name}: a client call is still hanging after ${SETTLE_DEADLINE_MS} ms`)), SETTLE_DEADLINE_MS))),
  ]).finally(() => clearTimeout(deadline));
  const settledMs = Date.now() - faultAt;
  let after = before;
  const recoveredMs = await until(async () => {
    after = await sample();
    return after.fds <= before.fds + FD_TOLERANCE && after.front <= before.front && after.anp <= idleAnpConnections(before.anp) && after.tunnels <= before.tunnels && after.rss <= before.rss + RSS_TOLERANCE;
  }, `${name}: fds, tunnels and RSS back to their baseline (${JSON.stringify(before)})`, RECOVERY_DEADLINE_MS).catch((err: Error) => {
    throw new Error(`${err.message}; last ${JSON.stringify(after)}`);
  });
  const row = { fault: name, outcomes, settledMs, recoveredMs, before, after };
  rows.push(row);
  heap.last = heapAfterGc();
  return row;
}

/** A watch over HTTP/1.1: how it ended, and its lines so far. */
function watchH1(p: string): { lines: () => number; done: Promise<Outcome>; destroy: () => void } {
  let lines = 0;
  let destroy = (): void => {};
  const done = new Promise<Outcome>((resolve) => {
    const req = https.request({ host: '127.0.0.1', port: us.port, path: p, ca, servername: 'localhost', agent: false }, (res) => {
      res.on('data', (c: Buffer) => {
        for (const b of c) if (b === 0x0a) lines++;
      });
      res.on('end', () => resolve(res.complete ? 'complete' : 'aborted'));
      res.on('aborted', () => resolve('aborted'));
      res.on('error', () => resolve('aborted'));
      res.on('close', () => resolve(res.complete ? 'complete' : 'aborted'));
    });
    req.on('error', () => resolve('aborted'));
    req.end();
    destroy = () => req.destroy();
  });
  return { lines: () => lines, done, destroy };
}

/** A watch as an HTTP/2 stream: complete (END_STREAM) or reset. */
function watchH2(p: string): { lines: () => number; done: Promise<Outcome>; cancel: () => void } {
  let lines = 0;
  const session = http2.connect(`https://127.0.0.1:${us.port}`, { ca, servername: 'localhost' });
  session.on('error', () => {});
  const stream = session.request({ ':path': p });
  const done = new Promise<Outcome>((resolve) => {
    stream.on('data', (c: Buffer) => {
      for (const b of c) if (b === 0x0a) lines++;
    });
    stream.on('error', () => {});
    stream.on('close', () => {
      resolve(stream.rstCode === http2.constants.NGHTTP2_NO_ERROR && stream.readableEnded ? 'complete' : 'reset');
      session.close();
    });
    stream.resume();
  });
  return { lines: () => lines, done, cancel: () => stream.close(http2.constants.NGHTTP2_CANCEL) };
}

const EXEC = '/api/v1/namespaces/ns1/pods/p1/exec?command=sh&stdin=true&stdout=true';

function openExec(cluster: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${us.port}/${cluster}${EXEC}`, ['v5.channel.k8s.io'], { ca });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const echoed = (ws: WebSocket, text: string): Promise<void> =>
  new Promise((resolve) => {
    ws.once('message', () => resolve());
    ws.send(text);
  });

const STREAM = (cluster: string, chunks = 1000): string => `/${cluster}/slow?watch=true&chunks=${chunks}&interval=20`;

/** Both clusters answer again (an agent or the proxy-server is back). */
async function served(): Promise<void> {
  await until(async () => (await h1(us.port, ca, '/1-cluster-b/api')).status === 200 && (await h2(us.port, ca, '/cluster-a/api')).status === 200, 'both clusters to answer', 20_000);
}

beforeAll(async () => {
  // Warm-up: every path the faults take runs once first (TLS contexts, pools, lazily loaded code).
  for (const c of ['cluster-a', '1-cluster-b']) {
    const w1 = watchH1(STREAM(c, 5));
    const w2 = watchH2(STREAM(c, 5));
    expect([await w1.done, await w2.done]).toEqual(['complete', 'complete']);
    const ws = await openExec(c);
    await echoed(ws, 'warm');
    ws.close();
    await new Promise((r) => ws.once('close', r));
    expect((await h1(us.port, ca, `/${c}/large?bytes=${1 << 20}`)).status).toBe(200);
  }
});

afterAll(() => {
  if (process.env.FAULT_REPORT === '1' && rows.length > 0) writeReport(chain.mode, rows);
});

describe('resources come back after each fault', () => {
  test('agent SIGKILL mid-stream: HTTP/1.1 aborted, HTTP/2 reset', async () => {
    const row = await fault('agent SIGKILL mid-stream', async () => {
      const w1 = watchH1(STREAM('1-cluster-b'));
      const w2 = watchH2(STREAM('1-cluster-b'));
      await until(() => w1.lines() >= 3 && w2.lines() >= 3, 'both watches to stream', 5000);
      chain.agents.b.proc.child.kill('SIGKILL');
      return [w1.done, w2.done];
    });
    expect(row.outcomes).toEqual(['aborted', 'reset']);
    await chain.agents.b.restart();
    await served();
  });

  test('agent SIGSTOP mid-stream, SIGCONT 2 s later: both watches resume and end complete', async () => {
    const row = await fault('agent SIGSTOP 2 s mid-stream', async () => {
      const w1 = watchH1(STREAM('1-cluster-b', 150));
      const w2 = watchH2(STREAM('1-cluster-b', 150));
      await until(() => w1.lines() >= 3 && w2.lines() >= 3, 'both watches to stream', 5000);
      const agent = chain.agents.b.proc.child;
      agent.kill('SIGSTOP');
      setTimeout(() => agent.kill('SIGCONT'), 2000);
      return [w1.done, w2.done];
    });
    expect(row.outcomes).toEqual(['complete', 'complete']);
    expect(row.settledMs).toBeGreaterThan(2000);
    await served();
  });

  test('agent SIGKILL mid-upgrade: the exec session is closed', async () => {
    const row = await fault('agent SIGKILL mid-upgrade (WebSocket exec)', async () => {
      const ws = await openExec('1-cluster-b');
      await echoed(ws, 'before the kill');
      ws.on('error', () => {});
      const closed = new Promise<Outcome>((resolve) => ws.once('close', () => resolve('closed')));
      chain.agents.b.proc.child.kill('SIGKILL');
      return [closed];
    });
    expect(row.outcomes).toEqual(['closed']);
    await chain.agents.b.restart();
    await served();
  });

  test('proxy-server restart mid-stream: the watches end cut off, and requests succeed again afterwards', async () => {
    let restarted: Promise<void> | undefined;
    const row = await fault('proxy-server restart mid-stream', async () => {
      const w1 = watchH1(STREAM('cluster-a'));
      const w2 = watchH2(STREAM('cluster-a'));
      await until(() => w1.lines() >= 3 && w2.lines() >= 3, 'both watches to stream', 5000);
      restarted = chain.anp.restart();
      return [w1.done, w2.done];
    });
    expect(row.outcomes).toEqual(['aborted', 'reset']);
    await restarted;
    await served();
  });

  test('target reset mid-body: the client sees the response cut off, never complete', async () => {
    const row = await fault('target reset mid-body (4 MiB announced, 2 MiB sent)', async () => {
      const w1 = watchH1(`/cluster-a/reset-mid-body?bytes=${4 << 20}`);
      const w2 = watchH2(`/cluster-a/reset-mid-body?bytes=${4 << 20}`);
      return [w1.done, w2.done];
    });
    expect(row.outcomes).toEqual(['aborted', 'reset']);
  });

  test('client gone mid-stream: HTTP/1.1 connection closed, HTTP/2 stream cancelled', async () => {
    const before = chain.clusters.a.target.aborted();
    const row = await fault('client gone mid-stream', async () => {
      const w1 = watchH1(STREAM('cluster-a'));
      const w2 = watchH2(STREAM('cluster-a'));
      await until(() => w1.lines() >= 3 && w2.lines() >= 3, 'both watches to stream', 5000);
      w1.destroy();
      w2.cancel();
      return [w1.done, w2.done];
    });
    expect(row.outcomes).toEqual(['aborted', 'reset']);
    // Both upstream requests were cancelled too, through the tunnels.
    await until(() => chain.clusters.a.target.aborted() >= before + 2, 'the target to see both streams cancelled', 5000);
  });
});

const MiB = (n: number): string => (n / 1024 / 1024).toFixed(1);

/** Replaces this mode's section of bench/results/fault-recovery.md, keeping the other mode's. */
function writeReport(mode: string, measured: Row[]): void {
  const file = path.join(ROOT, 'bench/results/fault-recovery.md');
  const begin = `<!-- ${mode}: begin -->`;
  const end = `<!-- ${mode}: end -->`;
  const section = [
    begin,
    `## ${mode} mode`,
    '',
    `${new Date().toISOString()}, Node ${process.version}, ANP ${ANP_VERSION}, \`FAULT_REPORT=1 npx vitest run --project ${mode} test/integration/fault-recovery.test.ts\``,
    '',
    '| fault | client outcomes | clients settled after (ms) | back to baseline after (ms) | open fds | front connections | connections to ANP | tunnels_open | RSS (MiB) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...measured.map((r) =>
      `| ${r.fault} | ${r.outcomes.join(', ')} | ${r.settledMs} | ${r.recoveredMs} | ${r.before.fds} → ${r.after.fds} (${signed(r.after.fds - r.before.fds)}) | ${r.before.front} → ${r.after.front} | ${r.before.anp} → ${r.after.anp} | ` +
      `${r.before.tunnels} → ${r.after.tunnels} | ${MiB(r.before.rss)} → ${MiB(r.after.rss)} (${signed(Number(MiB(r.after.rss - r.before.rss)))}) |`),
    '',
    `Over the whole run: RSS ${MiB(measured[0]!.before.rss)} MiB at the first baseline, ${MiB(measured.at(-1)!.after.rss)} MiB after the last fault; ` +
      `heap in use after a full GC ${MiB(heap.first!)} MiB, then ${MiB(heap.last!)} MiB.`,
    end,
  ].join('\n');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    text = [
      '# Fault recovery',
      '',
      'Written by `test/integration/fault-recovery.test.ts` with `FAULT_REPORT=1`, one section per frontend mode. After',
      'each fault the test waits for every client call to settle (deadline 10 s), then for the user-server\'s open file',
      `descriptors (within ${FD_TOLERANCE} of the baseline: the doubles' keep-alive sockets come and go), the TCP connections`,
      'to its port (both ends: the clients run in the same process; at most the baseline), its connections to the ANP frontend',
      '(at most the baseline in http-connect mode; in gRPC mode at most `--proxy-connections`, 4, the bounded set a fault may',
      'empty and traffic fills again), open tunnels (at most the baseline) and RSS (within 30 MiB) to be back',
      '(deadline 5 s). "Clients settled after" counts from the fault (for SIGSTOP: from the stop, 2 s before SIGCONT);',
      '"back to baseline after" counts from there. Baselines are taken with an empty tunnel pool (`--idle-tunnel-timeout=1s`);',
      'about 1 s there means a tunnel outlived the fault, back in the pool, and that timeout closed it.',
      '',
    ].join('\n');
  }
  const at = text.indexOf(begin);
  text = at === -1 ? `${text.trimEnd()}\n\n${section}\n` : `${text.slice(0, at)}${section}${text.slice(text.indexOf(end) + end.length)}`;
  writeFileSync(file, text);
}

const signed = (n: number): string => (n > 0 ? `+${n}` : String(n));
