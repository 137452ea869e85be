import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import YAML from 'yaml';
import { Metrics } from '../../src/observability/metrics.ts';
import { ROOT } from '../harness/certs.ts';

// openshift/prometheusrule.yaml run through the real promtool (built by scripts/build-test-deps.sh): its
// rule groups are written out as a rules file, then `promtool check rules` and `promtool test rules` with
// the cases in prometheus-rules.promtool.yaml.
type Obj = Record<string, any>;

const PROMTOOL = path.join(ROOT, '.cache/tools/promtool');
const CASES = path.join(ROOT, 'test/deploy/prometheus-rules.promtool.yaml');
const rule = YAML.parse(readFileSync(path.join(ROOT, 'openshift/prometheusrule.yaml'), 'utf8')) as Obj;
const alerts = (rule.spec.groups as Obj[]).flatMap((g) => g.rules as Obj[]).filter((r) => r.alert !== undefined);
const cases = YAML.parse(readFileSync(CASES, 'utf8')) as Obj;

let dir: string;
beforeAll(() => {
  if (!existsSync(PROMTOOL)) throw new Error(`${PROMTOOL} is missing: run scripts/build-test-deps.sh (npm test does)`);
  dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-rules-'));
  writeFileSync(path.join(dir, 'rules.yaml'), YAML.stringify({ groups: rule.spec.groups }));
  writeFileSync(path.join(dir, 'cases.yaml'), readFileSync(CASES));
});
afterAll(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

const promtool = (...args: string[]): string => {
  try {
    return execFileSync(PROMTOOL, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
};

describe('PrometheusRule', () => {
  test('promtool accepts the rules', () => {
    expect(promtool('check', 'rules', 'rules.yaml')).toContain(`SUCCESS: ${alerts.length} rules found`);
  });

  test('every alert fires on the series that should fire it and stays quiet on the others (promtool test rules)', () => {
    expect(promtool('test', 'rules', 'cases.yaml')).toContain('SUCCESS');
  });

  test('each alert has a case where it fires and a case where it stays quiet, past its `for`', () => {
    const checks = (cases.tests as Obj[]).flatMap((t) => t.alert_rule_test as Obj[]);
    for (const a of alerts) {
      const mine = checks.filter((c) => c.alertname === a.alert);
      expect(mine.some((c) => c.exp_alerts.length > 0), `${a.alert} fires somewhere`).toBe(true);
      const forMinutes = a.for === undefined ? 0 : Number(/^(\d+)m$/.exec(a.for)![1]);
      expect(mine.some((c) => c.exp_alerts.length === 0 && Number(/^(\d+)m$/.exec(c.eval_time)![1]) > forMinutes + 10), `${a.alert} stays quiet past its for`).toBe(true);
    }
  });

  test('the alerts read metrics the server exposes, by their real names', () => {
    const exposed = new Set(new Metrics().registry.getMetricsAsArray().map((m) => m.name));
    const used = new Set(alerts.flatMap((a) => [...String(a.expr).matchAll(/cluster_proxy_user_server_\w+/g)].map((m) => m[0].replace(/_bucket$/, ''))));
    expect(used.size).toBeGreaterThanOrEqual(5);
    for (const name of used) expect(exposed.has(name), name).toBe(true);
  });

  test('each alert has a severity, a summary, a description and a runbook line in the README', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    for (const a of alerts) {
      expect(a.labels?.severity, a.alert).toMatch(/^(warning|critical|info)$/);
      expect(a.annotations?.summary, a.alert).toBeTruthy();
      expect(a.annotations?.description, a.alert).toBeTruthy();
      expect(readme, a.alert).toMatch(new RegExp(`^\\| \`${a.alert}\` \\|`, 'm'));
    }
  });
});
