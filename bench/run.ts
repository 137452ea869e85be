// The benchmark: this user-server against the limit (a client pooling its own CONNECT tunnels through
// the same ANP), the upstream Go user-server and the OCM user-server, side by side in one run. See
// bench/README.md.
//   node bench/run.ts            short subset (a few minutes)
//   node bench/run.ts --full     every scenario
//   node bench/run.ts --smoke    a few seconds, limit and this user-server only (used by the test suite)
// Options: --out <dir> (default bench/results), --runs N, --seconds S, --systems limit,ts,go,ocm,
//          --only <scenario id prefixes> (e.g. --only watch,cold),
//          --base <git revision> runs this user-server at that revision too (systems tsbase, tsgrpcbase)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ANP_VERSION } from '../test/harness/anp.ts';
import { ROOT } from '../test/harness/certs.ts';
import { runJob, startHolder } from './lib/jobs.ts';
import { cpuSeconds, rssMiB, sampleRss } from './lib/proc.ts';
import { renderMarkdown, renderSvg, type BenchResults, type ScenarioResult, type SystemId, type SystemResult, type TargetCheck } from './lib/report.ts';
import { median, promValue, round } from './lib/stats.ts';
import type { LoadResult } from './runners/loadgen.ts';
import { coldCluster, hashedHost, HOT_CLUSTER, OCM_BIN, OCM_VERSION, startTopology, UPSTREAM_COMMIT, watchCluster, WATCH_CLUSTERS, type Topology } from './lib/topology.ts';

const { values: args } = parseArgs({
  options: {
    full: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(ROOT, 'bench/results') },
    runs: { type: 'string' },
    seconds: { type: 'string' },
    systems: { type: 'string' },
    only: { type: 'string' },
    base: { type: 'string' },
  },
});
const mode: BenchResults['mode'] = args.smoke ? 'smoke' : args.full ? 'full' : 'default';
const RUNS = Number(args.runs ?? (mode === 'smoke' ? 1 : 3));
const SECONDS = Number(args.seconds ?? (mode === 'smoke' ? 1 : mode === 'full' ? 10 : 5));
const WARMUP = mode === 'smoke' ? 1 : mode === 'full' ? 3 : 2;
const wanted = new Set<SystemId>((args.systems ?? (mode === 'smoke' ? 'limit,ts,tsgrpc' : `limit,ts,tsnoview,tsgrpc,floor,floorgrpc,go,ocm${args.base === undefined ? '' : ',tsbase,tsgrpcbase'}`)).split(',') as SystemId[]);
if ((wanted.has('tsbase') || wanted.has('tsgrpcbase')) && args.base === undefined) throw new Error('systems tsbase and tsgrpcbase need --base <git revision>');

/**
 * The tree of --base: `git archive` of that revision under .cache/bench-base/<commit> (kept for the next
 * run), sharing this checkout's node_modules, so that a change is measured before and after in one run.
 */
function baseTree(rev: string): { dir: string; commit: string } {
  const git = (...a: string[]): string => {
    const r = spawnSync('git', a, { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`git ${a.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const commit = git('rev-parse', '--verify', `${rev}^{commit}`);
  const dir = path.join(ROOT, '.cache/bench-base', commit);
  if (!existsSync(path.join(dir, 'src/cli.ts'))) {
    mkdirSync(dir, { recursive: true });
    const archive = spawnSync('bash', ['-c', `git archive ${commit} | tar -x -C "${dir}"`], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    if (archive.status !== 0) throw new Error(`git archive ${commit} failed`);
  }
  if (!existsSync(path.join(dir, 'node_modules'))) symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return { dir, commit };
}
const baseline = args.base === undefined ? undefined : baseTree(args.base);

const only = args.only?.split(',');
const want = (id: string): boolean => only === undefined || only.some((p) => id.startsWith(p));

const KUBE_PATH = '/api/v1/namespaces/default/configmaps';
const log = (msg: string): void => {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

let topo: Topology;
let systems: SystemId[];

/** Where a system's requests go: a user-server URL, or the limit's origin and path behind its own tunnels. */
function endpoint(system: SystemId, cluster: string, query: string): Record<string, unknown> {
  if (system === 'limit') return { tunnel: topo.tunnel, origin: `https://${hashedHost(cluster)}:7443`, path: `${KUBE_PATH}?${query}` };
  return { url: `${topo.servers.get(system as 'ts')!.base}/${cluster}${KUBE_PATH}?${query}`, caFile: topo.certs.file('ca.crt') };
}

/**
 * 1 KiB requests: autocannon for the user-servers. Large bodies: undici for every system, because
 * autocannon's client spent about twice undici's CPU per MiB and the load generator shares the 2 cores
 * with the systems under test. The limit always uses undici (it needs the tunnel connector); its new
 * tunnels are filled by a 1 s pre-warm inside the measuring process (the user-servers' pools are warm).
 */
function loadJob(system: SystemId, bytes: number, connections: number, seconds: number): object {
  const e = endpoint(system, HOT_CLUSTER, `bytes=${bytes}`);
  if (system === 'limit') return { kind: 'undici', ...e, connections, seconds, prewarmSeconds: Math.min(1, seconds / 2) };
  if (bytes >= 1 << 20) return { kind: 'undici', ...e, connections, seconds, prewarmSeconds: 0.5 };
  return { kind: 'autocannon', url: e.url, connections, seconds };
}

async function anpDials(system: SystemId): Promise<number> {
  const server = system === 'go' || system === 'ocm' || system === 'tsgrpc' || system === 'floorgrpc' || system === 'tsgrpcbase' ? topo.anpGrpc! : topo.anpHttp;
  return promValue(await server.metrics(), 'konnectivity_network_proxy_server_dial_duration_seconds_count');
}

/** This user-server's successful CONNECTs so far and its open tunnels (NaN for the other systems). */
async function ownTunnels(system: SystemId): Promise<{ dials: number; open: number }> {
  const metrics = topo.servers.get(system as 'ts')?.metrics;
  if (!['ts', 'tsnoview', 'tsgrpc', 'tsbase', 'tsgrpcbase'].includes(system) || metrics === undefined) return { dials: Number.NaN, open: Number.NaN };
  const text = await metrics();
  return {
    dials: promValue(text, 'cluster_proxy_user_server_tunnel_dials_total', ['outcome="success"']),
    open: promValue(text, 'cluster_proxy_user_server_tunnels_open'),
  };
}

/** The user-server's default --max-tunnels-per-cluster, which the benchmark does not change. */
const POOL_SIZE = 64;

function failed(err: unknown): SystemResult {
  return { status: 'failed', reason: (err as Error).message.split('\n').slice(0, 3).join(' '), runs: [], median: {} };
}

function finish(runs: Record<string, number>[]): SystemResult {
  const keys = Object.keys(runs[0] ?? {});
  const med: Record<string, number> = {};
  for (const k of keys) med[k] = round(median(runs.map((r) => r[k]!)), 3);
  return { status: 'ok', runs, median: med };
}

/** Throughput of one response size at one concurrency; every system checked, warmed up, then run in turn. */
async function httpScenario(id: string, title: string, bytes: number, connections: number, seconds = SECONDS): Promise<ScenarioResult> {
  log(`${id}: ${title}`);
  const result: ScenarioResult = { id, title, primary: bytes >= 1 << 20 ? 'mbps' : 'rps', higherIsBetter: true, systems: {} };
  const active: SystemId[] = [];
  for (const s of systems) {
    try {
      await topo.activate(s);
      await runJob('loadgen', { kind: 'check', ...endpoint(s, HOT_CLUSTER, `bytes=${bytes}`), bytes }, 120_000);
      const w = await runJob<LoadResult>('loadgen', loadJob(s, bytes, connections, WARMUP), (WARMUP + 90) * 1000);
      if (w.errors > 0 || w.non2xx > 0) throw new Error(`warm-up: ${w.errors} errors, ${w.non2xx} non-2xx of ${w.requests}`);
      active.push(s);
    } catch (err) {
      log(`  ${s} failed: ${(err as Error).message}`);
      result.systems[s] = failed(err);
    }
  }
  const runs = new Map<SystemId, Record<string, number>[]>(active.map((s) => [s, []]));
  for (let r = 0; r < RUNS; r++) {
    for (const s of active) {
      if (result.systems[s]?.status === 'failed') continue;
      try {
        await topo.activate(s);
        const pid = topo.servers.get(s as 'ts')?.pid;
        const cpu0 = pid !== undefined ? cpuSeconds(pid) : 0;
        const rss = pid !== undefined ? sampleRss(pid) : undefined;
        const anp0 = await anpDials(s);
        const own0 = await ownTunnels(s);
        const res = await runJob<LoadResult>('loadgen', loadJob(s, bytes, connections, seconds), (seconds + 90) * 1000);
        const cpu = pid !== undefined ? cpuSeconds(pid) - cpu0 : Number.NaN;
        const rssMax = rss?.stop() ?? Number.NaN;
        const anp = (await anpDials(s)) - anp0;
        const own = (await ownTunnels(s)).dials - own0.dials;
        // autocannon ends a run by dropping its connections mid-request, and the user-server rightly tears
        // down the tunnels those requests were on; the next run first refills the pool. Those refills are
        // not per-request CONNECTs, so they are allowed for (the raw count is kept too).
        const refill = Math.max(0, Math.min(connections, POOL_SIZE) - own0.open);
        if (res.errors > 0 || res.non2xx > 0 || res.requests === 0) throw new Error(`run ${r + 1}: ${res.errors} errors, ${res.non2xx} non-2xx of ${res.requests}`);
        const row = {
          rps: round(res.rps, 1),
          mbps: round(res.bytes / res.seconds / 1e6, 1),
          p50: round(res.p50, 2),
          p99: round(res.p99, 2),
          serverCpuUsPerReq: round((cpu * 1e6) / res.requests, 1),
          serverRssMiB: round(rssMax, 1),
          anpConnectsPer1000: round((anp * 1000) / res.requests, 2),
          ownConnectsPer1000: round((Math.max(0, own - refill) * 1000) / res.requests, 2),
          ownConnectsRawPer1000: round((own * 1000) / res.requests, 2),
          clientCpuUsPerReq: round((res.cpuSeconds * 1e6) / res.requests, 1),
          requests: res.requests,
        };
        runs.get(s)!.push(row);
        log(`  run ${r + 1} ${s}: ${row.rps} req/s, ${row.mbps} MB/s, p50 ${row.p50} p99 ${row.p99} ms, cpu ${row.serverCpuUsPerReq} us/req, rss ${row.serverRssMiB} MiB, CONNECTs/1000 ${row.anpConnectsPer1000}`);
      } catch (err) {
        log(`  ${s} failed: ${(err as Error).message}`);
        result.systems[s] = failed(err);
      }
    }
  }
  for (const s of active) if (result.systems[s]?.status !== 'failed') result.systems[s] = finish(runs.get(s)!);
  return withRatios(result);
}

/** First request to a cluster the system has not seen, against the following requests on the same pool. */
async function coldWarm(samples: number): Promise<ScenarioResult> {
  log('cold-warm: first request to a new cluster vs the next 20');
  const result: ScenarioResult = { id: 'cold-warm', title: 'cold cluster (first request) vs warm, 1 KiB, one client connection', primary: 'coldMs', higherIsBetter: false, systems: {} };
  const all = new Map<SystemId, Record<string, number>[]>(systems.map((s) => [s, []]));
  for (let k = 0; k < samples; k++) {
    for (const s of systems) {
      if (result.systems[s]?.status === 'failed') continue;
      try {
        await topo.activate(s);
        const e = endpoint(s, coldCluster(k), 'bytes=1024');
        // One request to a warm cluster first, so that the client's start-up and its own TLS handshake
        // with a user-server are not counted as the cluster's cold cost.
        const hot = endpoint(s, HOT_CLUSTER, 'bytes=1024');
        const prime = s === 'limit' ? `${hot.origin as string}${hot.path as string}` : hot.url;
        const res = await runJob<LoadResult>('loadgen', { kind: 'sequential', ...e, prime, count: 21 }, 120_000);
        if (res.non2xx > 0) throw new Error(`${res.non2xx} non-2xx`);
        const [cold, ...warm] = res.latencies!;
        all.get(s)!.push({ coldMs: round(cold!, 2), warmMs: round(median(warm), 2), coldOverWarm: round(cold! / median(warm), 1) });
      } catch (err) {
        log(`  ${s} failed: ${(err as Error).message}`);
        result.systems[s] = failed(err);
      }
    }
  }
  return completeScenario(result, all);
}

/** N watches held open and idle: the user-server's memory and CPU. */
async function idleWatches(count: number): Promise<ScenarioResult> {
  log(`watch-idle-${count}: ${count} idle watches over HTTP/2`);
  const result: ScenarioResult = { id: `watch-idle-${count}`, title: `${count} concurrent idle watches (HTTP/2, 100 per connection, ${WATCH_CLUSTERS} clusters)`, primary: 'rssMiB', higherIsBetter: false, systems: {} };
  result.systems.limit = { status: 'skipped', reason: 'measures the user-server itself', runs: [], median: {} };
  for (const s of systems.filter((x) => x !== 'limit')) {
    await topo.activate(s);
    const server = topo.servers.get(s as 'ts')!;
    const paths = Array.from({ length: WATCH_CLUSTERS }, (_, i) => `/${watchCluster(i)}${KUBE_PATH}?watch=true&resourceVersion=1`);
    const rssBefore = rssMiB(server.pid);
    const cpu0 = cpuSeconds(server.pid);
    const holder = startHolder<{ opened: number; seconds: number }>({ kind: 'idle', base: server.base, caFile: topo.certs.file('ca.crt'), paths, count, perSession: 100 }, 300_000);
    try {
      const opened = await holder.ready;
      const cpuOpen = cpuSeconds(server.pid) - cpu0;
      await sleep(3000);
      const idleCpu0 = cpuSeconds(server.pid);
      const idleSeconds = mode === 'full' ? 10 : 3;
      await sleep(idleSeconds * 1000);
      const idleCpu = cpuSeconds(server.pid) - idleCpu0;
      // Where this user-server's memory is: the JS heap (request objects) or outside it (TLS, HTTP/2 sessions).
      const text = server.metrics !== undefined ? await server.metrics() : '';
      const heapMiB = text ? promValue(text, 'cluster_proxy_user_server_nodejs_heap_size_used_bytes') / 2 ** 20 : Number.NaN;
      const externalMiB = text ? promValue(text, 'cluster_proxy_user_server_nodejs_external_memory_bytes') / 2 ** 20 : Number.NaN;
      const row = {
        rssMiB: round(rssMiB(server.pid), 1),
        rssBeforeMiB: round(rssBefore, 1),
        openSeconds: round(opened.seconds, 1),
        openCpuMsPerWatch: round((cpuOpen * 1000) / count, 2),
        idleCpuPercent: round((idleCpu / idleSeconds) * 100, 1),
        heapUsedMiB: round(heapMiB, 1),
        externalMiB: round(externalMiB, 1),
      };
      result.systems[s] = finish([row]);
      log(`  ${s}: ${JSON.stringify(row)}`);
    } catch (err) {
      log(`  ${s} failed: ${(err as Error).message}`);
      result.systems[s] = failed(err);
    } finally {
      await holder.stop();
      // Let the servers tear the tunnels down before the next measurement.
      await sleep(3000);
    }
  }
  return withRatios(result);
}

/** One watch receiving 1,000 events/s: delay from the target's write to the client's read. */
async function watchEvents(rate: number, seconds: number): Promise<ScenarioResult> {
  log(`watch-events: one watch at ${rate} events/s`);
  const result: ScenarioResult = { id: 'watch-events', title: `one watch receiving ${rate} events/s: target write to client read`, primary: 'p99', higherIsBetter: false, systems: {} };
  const all = new Map<SystemId, Record<string, number>[]>(systems.map((s) => [s, []]));
  for (let r = 0; r < RUNS; r++) {
    for (const s of systems) {
      if (result.systems[s]?.status === 'failed') continue;
      try {
        await topo.activate(s);
        const e = endpoint(s, HOT_CLUSTER, `watch=true&events=${rate}`);
        const res = await runJob<{ events: number; perSecond: number; p50: number; p99: number; max: number; gaps: number }>('watch-client', { kind: 'events', ...e, seconds }, (seconds + 60) * 1000);
        if (res.gaps > 0 || res.perSecond < rate * 0.8) throw new Error(`${res.perSecond} events/s arrived, ${res.gaps} gaps`);
        all.get(s)!.push({ p50: round(res.p50, 2), p99: round(res.p99, 2), max: round(res.max, 2), eventsPerSecond: round(res.perSecond, 0) });
      } catch (err) {
        log(`  ${s} failed: ${(err as Error).message}`);
        result.systems[s] = failed(err);
      }
    }
  }
  return completeScenario(result, all);
}

/** kubectl exec over WebSocket: round trips of small stdin messages echoed by the target. */
async function execRoundTrips(count: number): Promise<ScenarioResult> {
  log(`exec-ws: ${count} WebSocket round trips`);
  const result: ScenarioResult = { id: 'exec-ws', title: 'exec over WebSocket: round trip of a 64-byte stdin message', primary: 'p50', higherIsBetter: false, systems: {} };
  const all = new Map<SystemId, Record<string, number>[]>(systems.map((s) => [s, []]));
  const execPath = '/api/v1/namespaces/default/pods/bench/exec?command=sh&stdin=true&stdout=true&tty=true';
  for (let r = 0; r < RUNS; r++) {
    for (const s of systems) {
      if (result.systems[s]?.status === 'failed') continue;
      try {
        await topo.activate(s);
        const e: Record<string, unknown> =
          s === 'limit'
            ? { tunnel: topo.tunnel, origin: `https://${hashedHost(HOT_CLUSTER)}:7443`, path: execPath }
            : { url: `${topo.servers.get(s as 'ts')!.base}/${HOT_CLUSTER}${execPath}`, caFile: topo.certs.file('ca.crt') };
        const res = await runJob<{ count: number; p50: number; p99: number; max: number }>('watch-client', { kind: 'exec', ...e, count }, 120_000);
        all.get(s)!.push({ p50: round(res.p50, 3), p99: round(res.p99, 3), max: round(res.max, 2) });
      } catch (err) {
        log(`  ${s} failed: ${(err as Error).message}`);
        result.systems[s] = failed(err);
      }
    }
  }
  return completeScenario(result, all);
}

/** Medians for every system that did not fail, logged, and the ratios. */
function completeScenario(result: ScenarioResult, all: Map<SystemId, Record<string, number>[]>): ScenarioResult {
  for (const s of systems) if (result.systems[s]?.status !== 'failed') result.systems[s] = finish(all.get(s)!);
  for (const s of systems) log(`  ${s}: ${JSON.stringify(result.systems[s]?.median)}`);
  return withRatios(result);
}

function withRatios(result: ScenarioResult): ScenarioResult {
  const v = (s: SystemId): number | undefined => (result.systems[s]?.status === 'ok' ? result.systems[s]!.median[result.primary] : undefined);
  const ts = v('ts');
  const limit = v('limit');
  const go = v('go');
  const ocm = v('ocm');
  if (ts !== undefined && limit !== undefined && limit !== 0) result.tsOverLimit = round(ts / limit, 3);
  if (ts !== undefined && go !== undefined && go !== 0) result.tsOverGo = round(ts / go, 3);
  if (ts !== undefined && ocm !== undefined && ocm !== 0) result.tsOverOcm = round(ts / ocm, 3);
  const grpc = v('tsgrpc');
  if (grpc !== undefined && go !== undefined && go !== 0) result.grpcOverGo = round(grpc / go, 3);
  if (grpc !== undefined && ts !== undefined && ts !== 0) result.grpcOverTs = round(grpc / ts, 3);
  const floor = v('floor');
  if (ts !== undefined && floor !== undefined && floor !== 0) result.tsOverFloor = round(ts / floor, 3);
  const floorGrpc = v('floorgrpc');
  if (grpc !== undefined && floorGrpc !== undefined && floorGrpc !== 0) result.grpcOverFloor = round(grpc / floorGrpc, 3);
  const noView = v('tsnoview');
  if (ts !== undefined && noView !== undefined && noView !== 0) result.viewOnOverOff = round(ts / noView, 3);
  const tsBase = v('tsbase');
  if (ts !== undefined && tsBase !== undefined && tsBase !== 0) result.tsOverBase = round(ts / tsBase, 3);
  const grpcBase = v('tsgrpcbase');
  if (grpc !== undefined && grpcBase !== undefined && grpcBase !== 0) result.grpcOverBase = round(grpc / grpcBase, 3);
  return result;
}

function targets(scenarios: ScenarioResult[]): TargetCheck[] {
  const get = (id: string, s: SystemId, k: string): number | undefined => {
    const r = scenarios.find((x) => x.id === id)?.systems[s];
    return r?.status === 'ok' ? r.median[k] : undefined;
  };
  const checks: TargetCheck[] = [];
  const add = (name: string, value: number | undefined, goal: string, met: (v: number) => boolean): void => {
    checks.push({ name, value: value === undefined ? null : round(value, 3), goal, met: value === undefined ? null : met(value) });
  };
  const c = 'get1k-c64';
  const div = (a?: number, b?: number): number | undefined => (a === undefined || b === undefined || b === 0 ? undefined : a / b);
  add('1 KiB @64: req/s, this / upstream Go', div(get(c, 'ts', 'rps'), get(c, 'go', 'rps')), '>= 20', (v) => v >= 20);
  checks[checks.length - 1]!.limitValue = roundOrNull(div(get(c, 'limit', 'rps'), get(c, 'go', 'rps')));
  add('1 KiB @64: p99, this / upstream Go', div(get(c, 'ts', 'p99'), get(c, 'go', 'p99')), '<= 0.1', (v) => v <= 0.1);
  checks[checks.length - 1]!.limitValue = roundOrNull(div(get(c, 'limit', 'p99'), get(c, 'go', 'p99')));
  add('1 KiB @64: req/s, this / OCM user-server', div(get(c, 'ts', 'rps'), get(c, 'ocm', 'rps')), '> 1', (v) => v > 1);
  checks[checks.length - 1]!.limitValue = roundOrNull(div(get(c, 'limit', 'rps'), get(c, 'ocm', 'rps')));
  add('1 KiB @64: req/s, this / limit', div(get(c, 'ts', 'rps'), get(c, 'limit', 'rps')), '>= 0.6', (v) => v >= 0.6);
  add('1 MiB: MB/s, this / limit', div(get('mib1', 'ts', 'mbps'), get('mib1', 'limit', 'mbps')), '>= 0.8', (v) => v >= 0.8);
  add('1 KiB @64: user-server CPU per request (us)', get(c, 'ts', 'serverCpuUsPerReq'), '<= 35', (v) => v <= 35);
  add('1 KiB @64: user-server RSS (MiB)', get(c, 'ts', 'serverRssMiB'), '<= 200', (v) => v <= 200);
  add('10,000 idle watches: user-server RSS (MiB)', get('watch-idle-10000', 'ts', 'rssMiB'), '< 400', (v) => v < 400);
  add('1 KiB @64, warm pool: CONNECTs per 1,000 requests (beyond refilling the pool)', get(c, 'ts', 'ownConnectsPer1000'), '0', (v) => v === 0);
  // gRPC mode, against the same grpc-mode proxy-server as the Go user-servers.
  add('gRPC mode, 1 KiB @64: req/s, this / upstream Go', div(get(c, 'tsgrpc', 'rps'), get(c, 'go', 'rps')), '>= 8', (v) => v >= 8);
  add('gRPC mode, 1 KiB @64: p99, this / upstream Go', div(get(c, 'tsgrpc', 'p99'), get(c, 'go', 'p99')), '<= 0.125', (v) => v <= 0.125);
  add('gRPC mode, 1 MiB: MB/s, this / upstream Go', div(get('mib1', 'tsgrpc', 'mbps'), get('mib1', 'go', 'mbps')), '>= 1.5', (v) => v >= 1.5);
  add('gRPC mode, 10,000 idle watches: user-server RSS (MiB)', get('watch-idle-10000', 'tsgrpc', 'rssMiB'), '< 400', (v) => v < 400);
  add('gRPC mode / http-connect mode, 1 KiB @64: req/s', div(get(c, 'tsgrpc', 'rps'), get(c, 'ts', 'rps')), '>= 0.8', (v) => v >= 0.8);
  add('gRPC mode / http-connect mode, 1 MiB: MB/s', div(get('mib1', 'tsgrpc', 'mbps'), get('mib1', 'ts', 'mbps')), 'report', () => true);
  // The per-cluster view (GET /clusters) must not cost the hot path measurably.
  add('cluster view on / off, 1 KiB @64: req/s', div(get(c, 'ts', 'rps'), get(c, 'tsnoview', 'rps')), '>= 0.97', (v) => v >= 0.97);
  add('cluster view on / off, 1 KiB @64: server CPU per request', div(get(c, 'ts', 'serverCpuUsPerReq'), get(c, 'tsnoview', 'serverCpuUsPerReq')), '<= 1.03', (v) => v <= 1.03);
  return checks;
}

const roundOrNull = (v: number | undefined): number | null => (v === undefined ? null : round(v, 3));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<number> {
  const started = new Date();
  const loadAverageAtStart = os.loadavg().map((v) => round(v, 2));
  const cpus = os.cpus();
  log(`mode ${mode}: ${RUNS} runs of ${SECONDS} s after ${WARMUP} s warm-up; systems ${[...wanted].join(', ')}`);
  if (wanted.has('ocm') && mode !== 'smoke' && !existsSync(OCM_BIN)) {
    // Unlike the upstream Go user-server (a fetched snapshot), this one comes from the Go module proxy.
    log(`building the OCM user-server ${OCM_VERSION} (first run on this machine only, ~5 min)`);
    const built = spawnSync('bash', [path.join(ROOT, 'scripts/build-ocm-user-server.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (built.status !== 0) log(`OCM user-server build failed (exit ${built.status}); it is skipped`);
  }
  topo = await startTopology({ go: wanted.has('go'), ocm: wanted.has('ocm'), tsgrpc: wanted.has('tsgrpc'), tsnoview: wanted.has('tsnoview'), floor: wanted.has('floor'), floorgrpc: wanted.has('floorgrpc'), tsbase: wanted.has('tsbase'), tsgrpcbase: wanted.has('tsgrpcbase'), baseDir: baseline?.dir, watches: mode === 'full' && (want('watch-idle-1000') || want('watch-idle-10000')) });
  systems = (['limit', 'ts', 'tsnoview', 'tsgrpc', 'floor', 'floorgrpc', 'tsbase', 'tsgrpcbase', 'go', 'ocm'] as SystemId[]).filter((s) => wanted.has(s) && (s === 'limit' || topo.available.has(s)));
  for (const id of ['go', 'ocm'] as const) if (topo.skipped[id] !== undefined && wanted.has(id)) log(`${id} user-server skipped: ${topo.skipped[id]}`);
  const scenarios: ScenarioResult[] = [];
  try {
    if (mode === 'smoke') {
      scenarios.push(await httpScenario('get1k-c4', '1 KiB GET, 4 connections', 1024, 4));
    } else {
      const conns = mode === 'full' ? [1, 16, 64, 256] : [64];
      for (const n of conns) if (want(`get1k-c${n}`)) scenarios.push(await httpScenario(`get1k-c${n}`, `1 KiB GET, ${n} connections`, 1024, n));
      if (want('mib1')) scenarios.push(await httpScenario('mib1', '1 MiB GET, 16 connections', 1 << 20, 16));
      if (mode === 'full' && want('mib64')) scenarios.push(await httpScenario('mib64', '64 MiB GET, 2 connections', 64 << 20, 2, Math.max(SECONDS, 10)));
      if (want('cold-warm')) scenarios.push(await coldWarm(mode === 'full' ? 9 : 5));
      if (mode === 'full') {
        if (want('watch-events')) scenarios.push(await watchEvents(1000, 11));
        if (want('watch-idle-1000')) scenarios.push(await idleWatches(1000));
        if (want('watch-idle-10000')) scenarios.push(await idleWatches(10_000));
      }
      if (want('exec-ws')) scenarios.push(await execRoundTrips(mode === 'full' ? 1000 : 300));
    }
  } finally {
    await topo.close();
  }
  const results: BenchResults = {
    mode,
    date: started.toISOString(),
    machine: { cpus: cpus.length, cpuModel: cpus[0]?.model ?? 'unknown', memoryGiB: round(os.totalmem() / 2 ** 30, 1), node: process.version, kernel: os.release(), loadAverageAtStart },
    settings: { runs: RUNS, seconds: SECONDS, warmupSeconds: WARMUP, anp: ANP_VERSION, upstreamCommit: UPSTREAM_COMMIT, ocmVersion: OCM_VERSION, ...(baseline === undefined ? {} : { base: baseline.commit }) },
    systems: {
      limit: { name: 'limit: client pooling its own CONNECT tunnels through ANP (undici + src/tunnel/open-tunnel.ts)', included: systems.includes('limit') },
      ts: { name: 'this user-server (node src/cli.ts --proxy-mode=http-connect), ANP in http-connect mode', included: systems.includes('ts') },
      tsnoview: { name: 'this user-server as system 2, with --cluster-view=false (no per-cluster state): what the view costs', included: systems.includes('tsnoview') },
      tsgrpc: { name: 'this user-server (node src/cli.ts --proxy-mode=grpc), the same grpc-mode ANP as the Go user-servers', included: systems.includes('tsgrpc') },
      floor: { name: 'the floor: the smallest proxy doing the same job (bench/runners/floor-proxy.ts: node:http2 front, raw split, the project\'s dialers and pools, an undici relay; no framework, logs or metrics), http-connect mode', included: systems.includes('floor') },
      floorgrpc: { name: 'the floor in gRPC mode, on the grpc-mode ANP', included: systems.includes('floorgrpc') },
      tsbase: { name: `this user-server at the baseline revision ${baseline?.commit.slice(0, 10) ?? '(none)'} (--base), http-connect mode`, included: systems.includes('tsbase') },
      tsgrpcbase: { name: `this user-server at the baseline revision ${baseline?.commit.slice(0, 10) ?? '(none)'} (--base), gRPC mode`, included: systems.includes('tsgrpcbase') },
      go: { name: `upstream Go user-server (stolostron/cluster-proxy-addon ${UPSTREAM_COMMIT}), ANP in grpc mode`, included: systems.includes('go'), ...(topo.skipped.go !== undefined ? { skipped: topo.skipped.go } : {}) },
      ocm: { name: `OCM user-server (open-cluster-management.io/cluster-proxy ${OCM_VERSION}, the newest the Go module proxy serves; a tunnel and a TLS connection per request), ANP in grpc mode`, included: systems.includes('ocm'), ...(topo.skipped.ocm !== undefined ? { skipped: topo.skipped.ocm } : {}) },
    },
    scenarios,
    targets: mode === 'smoke' ? [] : targets(scenarios),
  };
  mkdirSync(path.join(args.out, 'raw'), { recursive: true });
  const stamp = started.toISOString().replaceAll(':', '-').slice(0, 19);
  writeFileSync(path.join(args.out, 'raw', `${stamp}-${mode}.json`), `${JSON.stringify(results, null, 2)}\n`);
  const base = mode === 'default' ? 'latest' : `latest-${mode}`;
  writeFileSync(path.join(args.out, `${base}.json`), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(path.join(args.out, `${base}.md`), renderMarkdown(results));
  writeFileSync(path.join(args.out, `${base}.svg`), renderSvg(results));
  log(`results in ${path.relative(process.cwd(), path.join(args.out, `${base}.{json,md,svg}`))}`);
  process.stdout.write(renderMarkdown(results));
  const anyFailed = scenarios.some((s) => Object.values(s.systems).some((r) => r?.status === 'failed'));
  return anyFailed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
