export type SystemId = 'limit' | 'ts' | 'tsnoview' | 'tsgrpc' | 'floor' | 'floorgrpc' | 'tsbase' | 'tsgrpcbase' | 'go' | 'ocm';

export interface SystemResult {
  status: 'ok' | 'failed' | 'skipped';
  reason?: string;
  runs: Record<string, number>[];
  median: Record<string, number>;
}

export interface ScenarioResult {
  id: string;
  title: string;
  /** The metric the ratios compare. */
  primary: string;
  higherIsBetter: boolean;
  systems: Partial<Record<SystemId, SystemResult>>;
  /** primary(this user-server) / primary(limit), / primary(upstream Go), and / primary(OCM user-server). */
  tsOverLimit?: number;
  tsOverGo?: number;
  tsOverOcm?: number;
  /** The same for this user-server in gRPC mode, against upstream Go and against itself in http-connect mode. */
  grpcOverGo?: number;
  grpcOverTs?: number;
  /** This user-server over the floor, in http-connect mode and in gRPC mode. */
  tsOverFloor?: number;
  grpcOverFloor?: number;
  /** This user-server with its per-cluster view over itself without it (http-connect mode). */
  viewOnOverOff?: number;
  /** This user-server over itself at the baseline revision (--base), in http-connect and gRPC mode. */
  tsOverBase?: number;
  grpcOverBase?: number;
  note?: string;
}

export interface TargetCheck {
  name: string;
  value: number | null;
  goal: string;
  met: boolean | null;
  /** For targets relative to the upstream Go user-server: what the limit itself reaches on that measure. */
  limitValue?: number | null;
}

export interface BenchResults {
  mode: 'smoke' | 'default' | 'full';
  date: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; kernel: string; loadAverageAtStart: number[] };
  settings: { runs: number; seconds: number; warmupSeconds: number; anp: string; upstreamCommit: string; ocmVersion?: string; base?: string };
  systems: Record<SystemId, { name: string; included: boolean; skipped?: string }>;
  scenarios: ScenarioResult[];
  targets: TargetCheck[];
}

const SYSTEMS: SystemId[] = ['limit', 'ts', 'tsnoview', 'tsgrpc', 'floor', 'floorgrpc', 'tsbase', 'tsgrpcbase', 'go', 'ocm'];
const LABEL: Record<SystemId, string> = { limit: 'limit', ts: 'this user-server (http-connect)', tsnoview: 'this user-server (http-connect), --cluster-view=false', tsgrpc: 'this user-server (gRPC)', floor: 'floor (http-connect)', floorgrpc: 'floor (gRPC)', tsbase: 'baseline revision (http-connect)', tsgrpcbase: 'baseline revision (gRPC)', go: 'upstream Go', ocm: 'OCM user-server' };

/** How each metric is shown: label and unit. */
const METRICS: Record<string, string> = {
  rps: 'req/s',
  mbps: 'MB/s',
  p50: 'p50 ms',
  p99: 'p99 ms',
  max: 'max ms',
  serverCpuUsPerReq: 'server CPU us/req',
  serverRssMiB: 'server RSS MiB',
  anpConnectsPer1000: 'ANP CONNECTs/1000 req',
  ownConnectsPer1000: 'tunnels opened/1000 req (beyond pool refill)',
  ownConnectsRawPer1000: 'tunnels opened/1000 req (raw)',
  clientCpuUsPerReq: 'client CPU us/req',
  coldMs: 'cold ms',
  warmMs: 'warm ms',
  coldOverWarm: 'cold/warm',
  rssMiB: 'RSS MiB',
  rssBeforeMiB: 'RSS before MiB',
  openSeconds: 'open s',
  openCpuMsPerWatch: 'CPU ms/watch to open',
  idleCpuPercent: 'idle CPU %',
  eventsPerSecond: 'events/s',
};

function cell(r: SystemResult | undefined, key: string): string {
  if (r === undefined) return '-';
  if (r.status !== 'ok') return r.status;
  const v = r.median[key];
  return v === undefined || Number.isNaN(v) ? '-' : String(v);
}

function ratio(v: number | undefined): string {
  return v === undefined ? '-' : `**${v}**`;
}

export function renderMarkdown(res: BenchResults): string {
  const m = res.machine;
  const lines: string[] = [];
  lines.push(`# Benchmark results (${res.mode})`, '');
  lines.push(`Measured ${res.date.slice(0, 16).replace('T', ' ')} UTC on ${m.cpus} cores (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}, Linux ${m.kernel}; load average at start ${m.loadAverageAtStart.join(' / ')}. ` +
    `ANP ${res.settings.anp}; median of ${res.settings.runs} runs of ${res.settings.seconds} s after a ${res.settings.warmupSeconds} s warm-up, systems interleaved run by run.`, '');
  for (const s of SYSTEMS) {
    const sys = res.systems[s];
    // Results from before the OCM user-server was part of the comparison have no entry for it.
    if (sys === undefined) continue;
    lines.push(`- **${LABEL[s]}**: ${sys.name}${sys.skipped !== undefined ? ` (skipped: ${sys.skipped})` : sys.included ? '' : ' (not in this run)'}`);
  }
  lines.push('', '## Ratios', '', 'Ratios compare the scenario\'s main metric: this user-server (http-connect mode) over the limit (2/1), over the upstream Go user-server (2/4) and over the OCM user-server (2/5); this user-server in gRPC mode, on the same grpc-mode ANP as the Go user-servers, over upstream Go (3/4) and over itself in http-connect mode (3/2); the cost of the per-cluster view (/clusters): this user-server with it over the same without it (2/2b); this user-server over the floor, the smallest proxy of the same design (2/F in http-connect mode, 3/Fg in gRPC mode); with --base, this user-server over itself at the baseline revision (2/2o, 3/3o).', '');
  const withBase = res.scenarios.some((sc) => sc.systems.tsbase !== undefined || sc.systems.tsgrpcbase !== undefined);
  const baseHead = withBase ? ' 2o: baseline | 3o: baseline (gRPC) |' : '';
  const baseRatioHead = withBase ? ' 2/2o | 3/3o |' : '';
  lines.push(`| scenario | metric | limit | this user-server (http-connect) | 2b: view off | this user-server (gRPC) | F: floor | Fg: floor (gRPC) |${baseHead} upstream Go | OCM user-server | 2/1 | 2/4 | 2/5 | 3/4 | 3/2 | 2/2b | 2/F | 3/Fg |${baseRatioHead}`, `|---|---|---|---|---|---|---|---|${withBase ? '---|---|' : ''}---|---|---|---|---|---|---|---|---|---|${withBase ? '---|---|' : ''}`);
  for (const sc of res.scenarios) {
    const better = sc.higherIsBetter ? 'higher is better' : 'lower is better';
    lines.push(`| ${sc.title} | ${METRICS[sc.primary] ?? sc.primary} (${better}) | ${cell(sc.systems.limit, sc.primary)} | ${cell(sc.systems.ts, sc.primary)} | ${cell(sc.systems.tsnoview, sc.primary)} | ${cell(sc.systems.tsgrpc, sc.primary)} | ${cell(sc.systems.floor, sc.primary)} | ${cell(sc.systems.floorgrpc, sc.primary)} |${withBase ? ` ${cell(sc.systems.tsbase, sc.primary)} | ${cell(sc.systems.tsgrpcbase, sc.primary)} |` : ''} ${cell(sc.systems.go, sc.primary)} | ${cell(sc.systems.ocm, sc.primary)} | ${ratio(sc.tsOverLimit)} | ${ratio(sc.tsOverGo)} | ${ratio(sc.tsOverOcm)} | ${ratio(sc.grpcOverGo)} | ${ratio(sc.grpcOverTs)} | ${ratio(sc.viewOnOverOff)} | ${ratio(sc.tsOverFloor)} | ${ratio(sc.grpcOverFloor)} |${withBase ? ` ${ratio(sc.tsOverBase)} | ${ratio(sc.grpcOverBase)} |` : ''}`);
  }
  if (res.targets.length > 0) {
    lines.push('', '## Targets', '', 'For targets against a Go user-server, the last column gives the same ratio for the limit. A user-server adds a hop to the path of the limit, so it is not expected to do better than that on this machine.', '');
    lines.push('| target | measured | goal | met | the limit on the same measure |', '|---|---|---|---|---|');
    for (const t of res.targets) {
      const bound = t.limitValue === undefined ? '' : String(t.limitValue ?? 'not measured');
      lines.push(`| ${t.name} | ${t.value ?? 'not measured'} | ${t.goal} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} | ${bound} |`);
    }
  }
  lines.push('', '## Details (medians)', '');
  for (const sc of res.scenarios) {
    lines.push(`### ${sc.title}`, '');
    if (sc.note !== undefined) lines.push(sc.note, '');
    const keys = [...new Set(SYSTEMS.flatMap((s) => Object.keys(sc.systems[s]?.median ?? {})))].filter((k) => k !== 'requests');
    if (keys.length === 0) {
      for (const s of SYSTEMS) if (sc.systems[s]?.reason !== undefined) lines.push(`- ${LABEL[s]}: ${sc.systems[s]!.reason}`);
      lines.push('');
      continue;
    }
    lines.push(`| system | ${keys.map((k) => METRICS[k] ?? k).join(' | ')} |`, `|---|${keys.map(() => '---').join('|')}|`);
    for (const s of SYSTEMS) {
      const r = sc.systems[s];
      if (r === undefined) continue;
      if (r.status !== 'ok') lines.push(`| ${LABEL[s]} | ${r.status}: ${(r.reason ?? '').replaceAll('|', '/')} ${keys.slice(1).map(() => '|').join(' ')} |`);
      else lines.push(`| ${LABEL[s]} | ${keys.map((k) => cell(r, k)).join(' | ')} |`);
    }
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}

const esc = (s: string): string => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');

/**
 * A horizontal bar chart: for each throughput or latency scenario, each system's main metric relative to
 * the limit (limit = 1; for latencies the inverse, so that longer bars are always better).
 */
export function renderSvg(res: BenchResults): string {
  const rows = res.scenarios.filter((sc) => sc.systems.limit?.status === 'ok' && (sc.systems.ts?.status === 'ok' || sc.systems.go?.status === 'ok'));
  const colors: Record<SystemId, string> = { limit: '#9e9e9e', ts: '#1f77b4', tsnoview: '#aec7e8', tsgrpc: '#9467bd', floor: '#ff7f0e', floorgrpc: '#ffbb78', tsbase: '#17becf', tsgrpcbase: '#9edae5', go: '#d62728', ocm: '#2ca02c' };
  // Only the systems this run measured: the baseline revision is there only with --base.
  const shown = SYSTEMS.filter((s) => rows.some((sc) => sc.systems[s] !== undefined));
  const barH = 14;
  const groupH = barH * shown.length + 18;
  const left = 300;
  const width = 860;
  const plotW = width - left - 90;
  const top = 56 + Math.ceil(shown.length / 3) * 18;
  const height = top + rows.length * groupH + 40;
  const rel = (sc: ScenarioResult, s: SystemId): number | undefined => {
    const base = sc.systems.limit!.median[sc.primary];
    const v = sc.systems[s]?.status === 'ok' ? sc.systems[s]!.median[sc.primary] : undefined;
    if (v === undefined || base === undefined || base === 0 || v === 0) return undefined;
    return sc.higherIsBetter ? v / base : base / v;
  };
  const maxRel = Math.max(1.2, ...rows.flatMap((sc) => shown.map((s) => rel(sc, s) ?? 0)));
  const x = (v: number): number => left + (Math.min(v, maxRel) / maxRel) * plotW;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="10" y="20" font-size="15" font-weight="bold">user-server benchmark (${esc(res.mode)}): relative to the limit = 1.0 (latencies inverted: longer is better)</text>`);
  out.push(`<text x="10" y="38" fill="#555">${esc(`${res.date.slice(0, 16).replace('T', ' ')} UTC, ${res.machine.cpus} cores, Node ${res.machine.node}, ANP ${res.settings.anp}, median of ${res.settings.runs} runs`)}</text>`);
  shown.forEach((s, i) => {
    const lx = 10 + (i % 3) * 285;
    const ly = 48 + Math.floor(i / 3) * 18;
    out.push(`<rect x="${lx}" y="${ly}" width="12" height="12" fill="${colors[s]}"/><text x="${lx + 16}" y="${ly + 10}">${esc(LABEL[s])}</text>`);
  });
  out.push(`<line x1="${x(1)}" y1="${top - 4}" x2="${x(1)}" y2="${height - 30}" stroke="#444" stroke-dasharray="4 3"/>`);
  out.push(`<text x="${x(1) - 8}" y="${height - 16}" fill="#444">1.0</text>`);
  rows.forEach((sc, g) => {
    const y0 = top + g * groupH;
    out.push(`<text x="${left - 8}" y="${y0 + barH * 1.5 + 4}" text-anchor="end">${esc(sc.title.length > 46 ? `${sc.title.slice(0, 45)}…` : sc.title)}</text>`);
    out.push(`<text x="${left - 8}" y="${y0 + barH * 2.5 + 6}" text-anchor="end" fill="#777" font-size="10">${esc(METRICS[sc.primary] ?? sc.primary)}</text>`);
    shown.forEach((s, i) => {
      const v = rel(sc, s);
      const y = y0 + i * barH;
      if (v === undefined) {
        out.push(`<text x="${left + 4}" y="${y + barH - 3}" fill="#999" font-size="10">${esc(`${LABEL[s]}: ${sc.systems[s]?.status ?? 'not run'}`)}</text>`);
        return;
      }
      const raw = sc.systems[s]!.median[sc.primary];
      out.push(`<rect x="${left}" y="${y}" width="${Math.max(1, x(v) - left)}" height="${barH - 2}" fill="${colors[s]}"/>`);
      out.push(`<text x="${x(v) + 4}" y="${y + barH - 3}" font-size="10">${v.toFixed(v < 0.1 ? 3 : 2)} (${raw})</text>`);
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
