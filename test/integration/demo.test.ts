import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, test } from 'vitest';
import YAML from 'yaml';
import { ROOT } from '../harness/certs.ts';

const parent = mkdtempSync(path.join(os.tmpdir(), 'cpus-demo-'));
afterAll(() => rmSync(parent, { recursive: true, force: true }));

function get(url: string, ca: Buffer, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, headers: { authorization: `Bearer ${token}` } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode!, body }));
      })
      .on('error', reject);
  });
}

const refused = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(false)));
    s.once('error', () => resolve(true));
  });

test('npm run demo: serves every kubeconfig context through the real ANP chain to real apiservers, its printed commands work, Ctrl-C stops it all', async () => {
  const dir = path.join(parent, 'demo');
  const child = spawn(process.execPath, [path.join(ROOT, 'scripts/demo.ts'), '--port=0', '--health-port=0', `--dir=${dir}`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`demo not ready: ${out}`)), 90_000);
      child.stdout.on('data', () => {
        if (out.includes('Ctrl-C stops everything.')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`demo exited ${code}: ${out}`)));
    });

    const kubeconfig = YAML.parse(readFileSync(path.join(dir, 'kubeconfig'), 'utf8'));
    expect(kubeconfig.contexts.map((c: { name: string }) => c.name)).toEqual(['cluster-a', '1-cluster-b']);
    const ports = new Set<number>();
    for (const { name, cluster } of kubeconfig.clusters as { name: string; cluster: { server: string; 'certificate-authority': string } }[]) {
      expect(cluster.server).toMatch(new RegExp(`^https://127\\.0\\.0\\.1:\\d+/${name}$`));
      ports.add(Number(new URL(cluster.server).port));
      const token: string = kubeconfig.users.find((u: { name: string }) => u.name === `${name}-admin`).user.token;
      const res = await get(`${cluster.server}/api/v1/namespaces/e2e/pods`, readFileSync(cluster['certificate-authority']), token);
      expect(res.status).toBe(200);
      const list = JSON.parse(res.body);
      expect(list.kind).toBe('PodList');
      expect(list.items.map((p: { metadata: { name: string } }) => p.metadata.name)).toContain(`${name}-pod-1`);
    }

    // The printed commands, pasted as they are.
    const sh = (line: string) => promisify(execFile)('sh', ['-c', line], { timeout: 30_000 });
    const printed = (start: string) => out.split('\n').map((l) => l.trim()).find((l) => l.startsWith(start) || l.includes(start))!;
    const curl = printed('curl ');
    expect(JSON.parse((await sh(`${curl} --silent --show-error --fail`)).stdout)).toMatchObject({ kind: 'NamespaceList' });
    expect((await sh(printed(' get pods -A'))).stdout).toMatch(/^e2e\s+cluster-a-pod-1\s+1\/1\s+Running/m);
    expect((await sh(printed(' exec '))).stdout.trim()).toBe('1-cluster-b-pod-1');

    const anpPort = Number(/ANP proxy-server\s+127\.0\.0\.1:(\d+)/.exec(out)![1]);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
    expect(out).toContain('stopped');
    for (const port of [...ports, anpPort]) expect(await refused(port), `port ${port}`).toBe(true);
    expect(existsSync(dir)).toBe(false);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}, 180_000);
