import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, test } from 'vitest';
import type { BenchResults } from '../../bench/lib/report.ts';
import { ROOT } from '../harness/certs.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Runs the harness for a few seconds with the systems a clean clone has (real ANP, this user-server and
// the limit client; not the upstream Go user-server) and checks that it measured and wrote its results.
// Nothing here asserts on speed.
test('npm run bench -- --smoke writes JSON, Markdown and SVG results', async () => {
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'bench/run.ts'), '--smoke', '--out', dir], { timeout: 170_000 });
  for (const ext of ['json', 'md', 'svg']) expect(existsSync(path.join(dir, `latest-smoke.${ext}`))).toBe(true);
  const results = JSON.parse(readFileSync(path.join(dir, 'latest-smoke.json'), 'utf8')) as BenchResults;
  expect(results.mode).toBe('smoke');
  const scenario = results.scenarios.find((s) => s.id === 'get1k-c4')!;
  for (const system of ['limit', 'ts'] as const) {
    const r = scenario.systems[system]!;
    expect(r.status, r.reason).toBe('ok');
    expect(r.median.requests).toBeGreaterThan(0);
  }
  // Tunnels are reused (the metric the CONNECT count comes from works), whatever the speed.
  expect(scenario.systems.ts!.median.ownConnectsPer1000).toBeLessThan(500);
  expect(scenario.tsOverLimit).toBeGreaterThan(0);
  expect(readFileSync(path.join(dir, 'latest-smoke.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
  expect(readFileSync(path.join(dir, 'latest-smoke.md'), 'utf8')).toContain('| 1 KiB GET, 4 connections |');
}, 180_000);
