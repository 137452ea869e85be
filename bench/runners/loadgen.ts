// The load generator, as its own process. argv[2] is a JSON job; one JSON result goes to stdout.
//   {kind:"autocannon", url, connections, seconds}              HTTP/1.1 through a user-server
//   {kind:"undici", url, connections, seconds}                  the same closed loop with undici (large bodies)
//   {kind:"undici", tunnel, origin, path, connections, seconds} the limit: undici over its own tunnels
//   {kind:"check", url | tunnel+origin+path, bytes}               one request, body length and sha256 checked
//   {kind:"sequential", ..., count}                              one request after the other, each latency
// Results: requests, rps, p50/p99 ms, bytes, errors (transport), non2xx, cpuSeconds of this process.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';
import { Agent, type Dispatcher } from 'undici';
import { expectedSha256 } from '../lib/payload.ts';
import { directTunnelAgent, KUBE_TARGET_HEADERS, type DirectTunnelSpec } from '../lib/tunnel-client.ts';

interface Job {
  kind: 'autocannon' | 'undici' | 'check' | 'sequential';
  url?: string;
  caFile?: string;
  tunnel?: DirectTunnelSpec;
  origin?: string;
  path?: string;
  connections?: number;
  seconds?: number;
  bytes?: number;
  count?: number;
  /**
   * sequential: fetched first and not counted, so that the client's own start-up (JIT, its connection to a
   * user-server) is not part of the first measured request. A URL, or for the limit another origin's URL.
   */
  prime?: string;
  /** undici: seconds of load before measuring, to open this process's connections or tunnels. */
  prewarmSeconds?: number;
}

export interface LoadResult {
  requests: number;
  seconds: number;
  rps: number;
  p50: number;
  p99: number;
  bytes: number;
  errors: number;
  non2xx: number;
  cpuSeconds: number;
  latencies?: number[];
}

const job = JSON.parse(process.argv[2]!) as Job;
const cpuStart = process.cpuUsage();
const cpu = (): number => {
  const u = process.cpuUsage(cpuStart);
  return (u.user + u.system) / 1e6;
};

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

// HTTP/1.1 like autocannon and the limit (undici 8 would negotiate HTTP/2 with the user-servers).
function target(): { dispatcher: Dispatcher; origin: string; path: string; headers: Record<string, string> } {
  if (job.tunnel !== undefined) {
    return { dispatcher: directTunnelAgent(job.tunnel, job.connections ?? 1), origin: job.origin!, path: job.path!, headers: KUBE_TARGET_HEADERS };
  }
  const u = new URL(job.url!);
  const dispatcher = new Agent({ connections: job.connections ?? 1, connect: { ca: readFileSync(job.caFile!) }, bodyTimeout: 0, allowH2: false });
  return { dispatcher, origin: u.origin, path: `${u.pathname}${u.search}`, headers: {} };
}

async function runAutocannon(): Promise<LoadResult> {
  const r = await autocannon({ url: job.url!, connections: job.connections!, duration: job.seconds!, pipelining: 1, timeout: 30 });
  const requests = r.requests.total;
  return {
    requests,
    seconds: r.duration,
    rps: requests / r.duration,
    p50: r.latency.p50,
    p99: r.latency.p99,
    bytes: r.throughput.total,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    cpuSeconds: cpu(),
  };
}

/** A closed loop like autocannon's: each of N connections sends its next request when the last ends. */
async function runClosedLoop(): Promise<LoadResult> {
  const t = target();
  const latencies: number[] = [];
  let bytes = 0;
  let errors = 0;
  let non2xx = 0;
  // This process's tunnels are new: a short loop fills the pool before the clock starts, as the
  // user-servers' pools are already full from the warm-up run.
  const warmEnd = performance.now() + (job.prewarmSeconds ?? 0) * 1000;
  const warm = async (): Promise<void> => {
    while (performance.now() < warmEnd) {
      const res = await t.dispatcher.request({ origin: t.origin, path: t.path, method: 'GET', headers: t.headers });
      // Read to the end: undici's body.dump() aborts the connection past its limit (a new tunnel each time).
      for await (const chunk of res.body) void chunk;
    }
  };
  await Promise.all(Array.from({ length: job.connections! }, warm));
  const started = performance.now();
  const end = started + job.seconds! * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        const res = await t.dispatcher.request({ origin: t.origin, path: t.path, method: 'GET', headers: t.headers });
        for await (const chunk of res.body) bytes += (chunk as Buffer).length;
        if (res.statusCode < 200 || res.statusCode > 299) non2xx++;
        latencies.push(performance.now() - t0);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: job.connections! }, worker));
  const seconds = (performance.now() - started) / 1000;
  await t.dispatcher.destroy();
  latencies.sort((a, b) => a - b);
  return { requests: latencies.length, seconds, rps: latencies.length / seconds, p50: percentile(latencies, 50), p99: percentile(latencies, 99), bytes, errors, non2xx, cpuSeconds: cpu() };
}

/** One request after another on one connection: each latency is reported (cold/warm). */
async function runSequential(): Promise<LoadResult> {
  const t = target();
  if (job.prime !== undefined) {
    const p = job.tunnel !== undefined ? new URL(job.prime, job.origin) : new URL(job.prime);
    const res = await t.dispatcher.request({ origin: p.origin, path: `${p.pathname}${p.search}`, method: 'GET', headers: t.headers });
    for await (const chunk of res.body) void chunk;
    if (res.statusCode !== 200) throw new Error(`prime request: status ${res.statusCode}`);
  }
  const latencies: number[] = [];
  let bytes = 0;
  let non2xx = 0;
  const started = performance.now();
  for (let i = 0; i < job.count!; i++) {
    const t0 = performance.now();
    const res = await t.dispatcher.request({ origin: t.origin, path: t.path, method: 'GET', headers: t.headers });
    for await (const chunk of res.body) bytes += (chunk as Buffer).length;
    if (res.statusCode < 200 || res.statusCode > 299) non2xx++;
    latencies.push(performance.now() - t0);
  }
  const seconds = (performance.now() - started) / 1000;
  await t.dispatcher.destroy();
  const sorted = [...latencies].sort((a, b) => a - b);
  return { requests: latencies.length, seconds, rps: latencies.length / seconds, p50: percentile(sorted, 50), p99: percentile(sorted, 99), bytes, errors: 0, non2xx, cpuSeconds: cpu(), latencies };
}

async function runCheck(): Promise<LoadResult> {
  const t = target();
  const res = await t.dispatcher.request({ origin: t.origin, path: t.path, method: 'GET', headers: t.headers });
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  await t.dispatcher.destroy();
  if (res.statusCode !== 200) throw new Error(`check: status ${res.statusCode}`);
  if (bytes !== job.bytes) throw new Error(`check: ${bytes} bytes, expected ${job.bytes}`);
  if (hash.digest('hex') !== expectedSha256(job.bytes!)) throw new Error('check: body sha256 differs from the pattern');
  return { requests: 1, seconds: 0, rps: 0, p50: 0, p99: 0, bytes, errors: 0, non2xx: 0, cpuSeconds: cpu() };
}

const run = { autocannon: runAutocannon, undici: runClosedLoop, check: runCheck, sequential: runSequential }[job.kind];
run().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  },
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
