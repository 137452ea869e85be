// Memory probe for idle watches: where a user-server's memory goes per watch.
//   node bench/memory-probe.ts [--count 2000] [--systems ts,floor,tsbase] [--base HEAD] [--snapshot] [--warm]
// Starts the bench topology, then for each system: RSS and /proc/<pid>/smaps_rollup before, N idle
// watches (HTTP/2, 100 per connection, 10 clusters, as bench/run.ts's watch-idle scenario), the same
// after, then after the watches closed. --snapshot sends SIGUSR2 at each step (start the servers with
// BENCH_TS_NODE_ARGS="--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=<dir>"); bench/memory-heap-diff.ts
// compares two snapshots. --warm runs 1 KiB GETs at 64 connections first (RSS "before" as in --full).
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from '../test/harness/certs.ts';
import { runJob, startHolder } from './lib/jobs.ts';
import { cpuSeconds, rssMiB } from './lib/proc.ts';
import { promValue } from './lib/stats.ts';
import { HOT_CLUSTER, startTopology, watchCluster, WATCH_CLUSTERS, type ServerId } from './lib/topology.ts';

const { values: args } = parseArgs({
  options: {
    count: { type: 'string', default: '2000' },
    systems: { type: 'string', default: 'ts' },
    base: { type: 'string' },
    snapshot: { type: 'boolean', default: false },
    warm: { type: 'boolean', default: false },
    hold: { type: 'string', default: '3' },
  },
});
const count = Number(args.count);
const systems = args.systems!.split(',') as ServerId[];
const KUBE_PATH = '/api/v1/namespaces/default/configmaps';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let baseDir: string | undefined;
if (args.base !== undefined) {
  const commit = spawnSync('git', ['rev-parse', '--verify', `${args.base}^{commit}`], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
  baseDir = path.join(ROOT, '.cache/bench-base', commit);
}

function smaps(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m !== null && ['Rss', 'Anonymous', 'Pss_File', 'Pss_Anon'].includes(m[1]!)) out[m[1]!] = Math.round(Number(m[2]) / 102.4) / 10;
  }
  return out;
}

async function stats(s: ServerId, pid: number, metrics?: () => Promise<string>): Promise<Record<string, number>> {
  const row: Record<string, number> = { rssMiB: Math.round(rssMiB(pid) * 10) / 10, ...smaps(pid) };
  if (metrics !== undefined) {
    const text = await metrics();
    for (const [k, n] of [['heapUsed', 'cluster_proxy_user_server_nodejs_heap_size_used_bytes'], ['heapTotal', 'cluster_proxy_user_server_nodejs_heap_size_total_bytes'], ['external', 'cluster_proxy_user_server_nodejs_external_memory_bytes']] as const) {
      const v = promValue(text, n);
      if (Number.isFinite(v)) row[k] = Math.round(v / 2 ** 20 * 10) / 10;
    }
    for (const space of ['new', 'old']) {
      row[`${space}Total`] = Math.round(promValue(text, 'cluster_proxy_user_server_nodejs_heap_space_size_total_bytes', [`space="${space}"`]) / 2 ** 20 * 10) / 10;
      row[`${space}Used`] = Math.round(promValue(text, 'cluster_proxy_user_server_nodejs_heap_space_size_used_bytes', [`space="${space}"`]) / 2 ** 20 * 10) / 10;
    }
  }
  void s;
  return row;
}

const topo = await startTopology({ go: false, ocm: false, tsgrpc: false, tsnoview: systems.includes('tsnoview'), floor: systems.includes('floor'), floorgrpc: false, tsbase: systems.includes('tsbase'), tsgrpcbase: false, baseDir, watches: true });
try {
  for (const s of systems) {
    const server = topo.servers.get(s)!;
    const snap = (label: string): Promise<void> => {
      if (!args.snapshot) return Promise.resolve();
      process.stderr.write(`snapshot ${s} ${label}\n`);
      process.kill(server.pid, 'SIGUSR2');
      return sleep(count > 3000 ? 25_000 : 12_000);
    };
    if (args.warm) {
      const job = { url: `${server.base}/${HOT_CLUSTER}${KUBE_PATH}?bytes=1024`, caFile: topo.certs.file('ca.crt'), connections: 64, seconds: 10, kind: 'autocannon' };
      await runJob('loadgen', job, 60_000).catch((e: Error) => process.stderr.write(`warm: ${e.message}\n`));
      await sleep(2000);
    }
    const before = await stats(s, server.pid, server.metrics);
    const cpu0 = cpuSeconds(server.pid);
    await snap('before');
    const paths = Array.from({ length: WATCH_CLUSTERS }, (_, i) => `/${watchCluster(i)}${KUBE_PATH}?watch=true&resourceVersion=1`);
    const holder = startHolder<{ opened: number; seconds: number }>({ kind: 'idle', base: server.base, caFile: topo.certs.file('ca.crt'), paths, count, perSession: 100 }, 300_000);
    const opened = await holder.ready;
    const cpuOpen = cpuSeconds(server.pid) - cpu0;
    await sleep(Number(args.hold) * 1000);
    const during = await stats(s, server.pid, server.metrics);
    await snap('during');
    await holder.stop();
    await sleep(5000);
    const after = await stats(s, server.pid, server.metrics);
    const perWatch: Record<string, number> = {};
    for (const k of Object.keys(during)) perWatch[k] = Math.round(((during[k]! - before[k]!) * 2 ** 20) / count);
    process.stdout.write(`${JSON.stringify({ system: s, count, openSeconds: opened.seconds, openCpuMsPerWatch: Math.round(cpuOpen * 1e6 / count) / 1000, before, during, after, bytesPerWatch: perWatch })}\n`);
  }
} finally {
  await topo.close();
}
