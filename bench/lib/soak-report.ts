import type { SoakResult } from './soak.ts';

export interface SoakContext {
  started: string;
  loadAtStart: string;
  node: string;
  cores: number;
  seconds: number;
}

const fmt = (r: Record<string, number>): string => Object.entries(r).map(([k, v]) => `${k}: ${v}`).join(', ') || 'none';

/**
 * Flat-at-the-end figures: RSS over the second half of the load (the first half includes the heap's
 * growth to its working size), and descriptors and tunnels once every client has closed.
 */
export function soakVerdict(r: SoakResult): { rssSecondHalfGrowthMiB: number; fdsAtEnd: number; fdsAtStart: number; tunnelsAtEnd: number } {
  const underLoad = r.samples.filter((s) => s.watchesOpen > 0);
  const last = underLoad[underLoad.length - 1] ?? r.samples[0]!;
  const mid = underLoad.find((s) => s.t >= last.t / 2) ?? last;
  const end = r.samples[r.samples.length - 1]!;
  return { rssSecondHalfGrowthMiB: Math.round((last.rssMiB - mid.rssMiB) * 10) / 10, fdsAtEnd: end.fds, fdsAtStart: r.samples[0]!.fds, tunnelsAtEnd: end.tunnelsOpen };
}

export function soakMarkdown(r: SoakResult, c: SoakContext): string {
  const v = soakVerdict(r);
  const lines = [
    '# Soak',
    '',
    `Run ${c.started}, ${c.seconds} s of mixed load, ${r.mode} mode, ${r.agentRestarts} restarts of cluster-a's agent; Node ${c.node}, ${c.cores} cores, load average at start ${c.loadAtStart}. \`npm run soak\` (bench/soak.ts) writes this file.`,
    '',
    `Operations: ${fmt(r.ops)}.`,
    `Failures within 8 s of an agent restart, on its cluster (expected: 503 no agent, streams cut): ${fmt(r.failures.duringRestart)}.`,
    `Failures at any other time: ${fmt(r.failures.otherwise)}. Hung operations (no answer or no byte for 30 s): ${fmt(r.hung)}.`,
    `RSS growth over the second half of the load: ${v.rssSecondHalfGrowthMiB} MiB. Open descriptors before the load ${v.fdsAtStart}, after it ${v.fdsAtEnd} (pooled idle tunnels); tunnels open after it ${v.tunnelsAtEnd}.`,
    '',
    '![RSS and descriptors over time](soak.svg)',
    '',
    '| t (s) | RSS MiB | open fds | tunnels open | watches + logs open | operations | failures |',
    '|---|---|---|---|---|---|---|',
    ...r.samples.map((s) => `| ${s.t} | ${s.rssMiB} | ${s.fds} | ${s.tunnelsOpen} | ${s.watchesOpen} | ${s.ops} | ${s.failures} |`),
    '',
  ];
  return lines.join('\n');
}

/** A two-series line chart (RSS and open descriptors against time), plain SVG. */
export function soakSvg(r: SoakResult): string {
  const W = 720, H = 300, L = 50, R = 50, T = 30, B = 40;
  const tMax = Math.max(1, ...r.samples.map((s) => s.t));
  const rssMax = Math.max(1, ...r.samples.map((s) => s.rssMiB)) * 1.1;
  const fdMax = Math.max(1, ...r.samples.map((s) => s.fds)) * 1.1;
  const x = (t: number): number => L + ((W - L - R) * t) / tMax;
  const y = (v: number, max: number): number => H - B - ((H - T - B) * v) / max;
  const line = (pick: (s: (typeof r.samples)[number]) => number, max: number): string => r.samples.map((s, i) => `${i ? 'L' : 'M'}${x(s.t).toFixed(1)},${y(pick(s), max).toFixed(1)}`).join(' ');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${L}" y="18" font-size="13">Soak: user-server RSS (MiB, left) and open descriptors (right) over ${tMax} s</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#888"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#888"/>`,
    `<line x1="${W - R}" y1="${T}" x2="${W - R}" y2="${H - B}" stroke="#888"/>`,
    `<text x="${L - 6}" y="${T + 4}" text-anchor="end" fill="#1f77b4">${Math.round(rssMax)}</text>`,
    `<text x="${L - 6}" y="${H - B}" text-anchor="end" fill="#1f77b4">0</text>`,
    `<text x="${W - R + 6}" y="${T + 4}" fill="#d62728">${Math.round(fdMax)}</text>`,
    `<text x="${W - R + 6}" y="${H - B}" fill="#d62728">0</text>`,
    `<text x="${W / 2}" y="${H - 10}" text-anchor="middle">seconds (dashed: agent restarts)</text>`,
    ...r.restartsAt.map((t) => `<line x1="${x(t).toFixed(1)}" y1="${T}" x2="${x(t).toFixed(1)}" y2="${H - B}" stroke="#999" stroke-dasharray="4 3"/>`),
    `<path d="${line((s) => s.rssMiB, rssMax)}" fill="none" stroke="#1f77b4" stroke-width="2"/>`,
    `<path d="${line((s) => s.fds, fdMax)}" fill="none" stroke="#d62728" stroke-width="2"/>`,
    '</svg>',
    '',
  ].join('\n');
}
