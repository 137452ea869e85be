// Watch clients, as their own process. argv[2] is a JSON job.
//   {kind:"idle", base, caFile, paths, count, perSession}
//       opens `count` watches over HTTP/2 (`perSession` streams per connection, paths used round-robin),
//       prints {"opened", "seconds"} once every one has its response headers, then holds them until SIGTERM.
//   {kind:"events", url | tunnel+origin+path, caFile, seconds}
//       one watch over HTTP/1.1 whose target writes stamped events; prints the delays from the target's
//       write to this process's read (p50, p99, max, ms) and how many events arrived.
//   {kind:"exec", url | tunnel+origin+path, caFile, count}
//       kubectl exec's transport: a WebSocket (v5.channel.k8s.io) whose target echoes; `count` stdin
//       messages one after the other, each timed until its echo arrives (p50, p99 ms).
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { Agent, type Dispatcher } from 'undici';
import WebSocket from 'ws';
import { openTunnelSocket } from '../lib/tunnel-client.ts';
import { wallMs } from '../lib/payload.ts';
import { directTunnelAgent, KUBE_TARGET_HEADERS, type DirectTunnelSpec } from '../lib/tunnel-client.ts';

interface Job {
  kind: 'idle' | 'events' | 'exec';
  base?: string;
  caFile?: string;
  paths?: string[];
  count?: number;
  perSession?: number;
  url?: string;
  tunnel?: DirectTunnelSpec;
  origin?: string;
  path?: string;
  seconds?: number;
}

const job = JSON.parse(process.argv[2]!) as Job;

async function idle(): Promise<void> {
  const ca = readFileSync(job.caFile!);
  const sessions: http2.ClientHttp2Session[] = [];
  const started = performance.now();
  const openOne = (session: http2.ClientHttp2Session, path: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ':method': 'GET', ':path': path });
      stream.once('response', (headers) => {
        if (headers[':status'] !== 200) reject(new Error(`watch ${path}: status ${headers[':status']}`));
        else resolve();
      });
      stream.once('error', reject);
      stream.on('data', () => {});
      stream.end();
    });
  const perSession = job.perSession!;
  let next = 0;
  for (let opened = 0; opened < job.count!; opened += perSession) {
    const session = http2.connect(job.base!, { ca, servername: 'localhost' });
    session.on('error', (err) => {
      process.stderr.write(`session error: ${err.message}\n`);
    });
    sessions.push(session);
    const n = Math.min(perSession, job.count! - opened);
    await Promise.all(Array.from({ length: n }, () => openOne(session, job.paths![next++ % job.paths!.length]!)));
  }
  process.stdout.write(`${JSON.stringify({ opened: job.count, seconds: (performance.now() - started) / 1000 })}\n`);
  process.on('SIGTERM', () => {
    for (const s of sessions) s.destroy();
    process.exit(0);
  });
}

async function events(): Promise<void> {
  let dispatcher: Dispatcher;
  let origin: string;
  let path: string;
  let headers: Record<string, string> = {};
  if (job.tunnel !== undefined) {
    dispatcher = directTunnelAgent(job.tunnel, 1);
    origin = job.origin!;
    path = job.path!;
    headers = KUBE_TARGET_HEADERS;
  } else {
    const u = new URL(job.url!);
    dispatcher = new Agent({ connect: { ca: readFileSync(job.caFile!) }, bodyTimeout: 0, allowH2: false });
    origin = u.origin;
    path = `${u.pathname}${u.search}`;
  }
  const controller = new AbortController();
  const res = await dispatcher.request({ origin, path, method: 'GET', headers, signal: controller.signal });
  if (res.statusCode !== 200) throw new Error(`events watch: status ${res.statusCode}`);
  const delays: number[] = [];
  let rest = '';
  let lastSeq = 0;
  let gaps = 0;
  const end = performance.now() + job.seconds! * 1000;
  // The first second is a warm-up (timers, JIT); its events are read but not counted.
  const countFrom = performance.now() + 1000;
  try {
    for await (const chunk of res.body) {
      const now = wallMs();
      rest += (chunk as Buffer).toString('utf8');
      let nl;
      while ((nl = rest.indexOf('\n')) !== -1) {
        const line = rest.slice(0, nl);
        rest = rest.slice(nl + 1);
        const ev = JSON.parse(line) as { seq: number; t: number };
        if (ev.seq !== lastSeq + 1) gaps++;
        lastSeq = ev.seq;
        if (performance.now() >= countFrom) delays.push(now - ev.t);
      }
      if (performance.now() >= end) break;
    }
  } finally {
    controller.abort();
  }
  delays.sort((a, b) => a - b);
  const at = (p: number): number => delays[Math.min(delays.length - 1, Math.floor((p / 100) * delays.length))] ?? 0;
  process.stdout.write(`${JSON.stringify({ events: delays.length, perSecond: delays.length / (job.seconds! - 1), p50: at(50), p99: at(99), max: delays[delays.length - 1] ?? 0, gaps })}\n`);
  await dispatcher.destroy().catch(() => {});
  process.exit(0);
}

async function exec(): Promise<void> {
  const protocols = ['v5.channel.k8s.io', 'v4.channel.k8s.io'];
  let ws: WebSocket;
  if (job.tunnel !== undefined) {
    // The limit: its own tunnel to the service-proxy, the upgrade sent straight inside it.
    const socket = await openTunnelSocket(job.tunnel, new URL(job.origin!).hostname, 7443);
    ws = new WebSocket(`wss://${new URL(job.origin!).host}${job.path!}`, protocols, {
      headers: KUBE_TARGET_HEADERS,
      createConnection: () => socket,
    });
  } else {
    ws = new WebSocket(job.url!.replace(/^https:/, 'wss:'), protocols, { ca: readFileSync(job.caFile!) });
  }
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`exec upgrade answered ${res.statusCode}`)));
  });
  // Channel 0 (stdin) and 63 bytes of keystrokes, as kubectl sends them.
  const message = Buffer.concat([Buffer.from([0]), Buffer.alloc(63, 0x61)]);
  const rtts: number[] = [];
  for (let i = 0; i < job.count!; i++) {
    const t0 = performance.now();
    const echoed = new Promise<Buffer>((resolve) => ws.once('message', (data) => resolve(data as Buffer)));
    ws.send(message, { binary: true });
    const got = await echoed;
    if (!got.equals(message)) throw new Error('exec: the echo differs from what was sent');
    // The first round trips warm the JIT on every hop; they are not counted.
    if (i >= 10) rtts.push(performance.now() - t0);
  }
  ws.close();
  rtts.sort((a, b) => a - b);
  const at = (p: number): number => rtts[Math.min(rtts.length - 1, Math.floor((p / 100) * rtts.length))] ?? 0;
  process.stdout.write(`${JSON.stringify({ count: rtts.length, p50: at(50), p99: at(99), max: rtts[rtts.length - 1] ?? 0 })}\n`);
  process.exit(0);
}

({ idle, events, exec })[job.kind]().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
