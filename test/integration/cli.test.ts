import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Pool } from 'undici';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { SETTINGS } from '../../src/config/settings.ts';
import { ROOT, makeCerts, standaloneServerEnv, type CertSet } from '../harness/certs.ts';

const CLI = path.join(ROOT, 'src/cli.ts');
let dir: string;
let certs: CertSet;
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-cli-'));
  certs = makeCerts(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 20_000 });

test('--help lists every flag with its environment variable', () => {
  const r = run(['--help']);
  expect(r.status).toBe(0);
  for (const s of SETTINGS) {
    expect(r.stdout).toContain(`--${s.flag}`);
    expect(r.stdout).toContain(s.env);
  }
});

test('a missing required setting stops the process with a message naming it', () => {
  const r = run([]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/--(proxy-server-host|server-cert) \(CLUSTER_PROXY_/);
});

test('an invalid value from the environment is named as the operator wrote it', () => {
  const r = run(['--proxy-server-uds=/tmp/x.sock'], { CLUSTER_PROXY_CONNECT_TIMEOUT: 'soon' });
  expect(r.status).toBe(2);
  expect(r.stderr).toContain('--connect-timeout (CLUSTER_PROXY_CONNECT_TIMEOUT) must be a duration');
});

test('certificates that do not load stop the process with a message naming the settings', () => {
  const garbage = path.join(dir, 'garbage.key');
  writeFileSync(garbage, '-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n');
  const common = ['--proxy-server-uds=/tmp/x.sock', `--service-proxy-ca-cert=${certs.file('ca.crt')}`];
  const bad = run([...common, `--server-cert=${certs.file('user-server.crt')}`, `--server-key=${garbage}`]);
  expect(bad.status).toBe(2);
  expect(bad.stderr).toContain('--server-cert (CLUSTER_PROXY_SERVER_CERT), --server-key (CLUSTER_PROXY_SERVER_KEY): the private key cannot be parsed');
  const mismatch = run([...common, `--server-cert=${certs.file('user-server.crt')}`, `--server-key=${certs.file('proxy-agent.key')}`]);
  expect(mismatch.status).toBe(2);
  expect(mismatch.stderr).toContain('the private key does not match the certificate');
  const noCa = run(['--proxy-server-uds=/tmp/x.sock', `--server-cert=${certs.file('user-server.crt')}`, `--server-key=${certs.file('user-server.key')}`, `--service-proxy-ca-cert=${garbage}`]);
  expect(noCa.status).toBe(2);
  expect(noCa.stderr).toContain('--service-proxy-ca-cert (CLUSTER_PROXY_SERVICE_PROXY_CA_CERT): no PEM certificate found');
});

test('an unknown flag is refused', () => {
  const r = run(['--no-such-flag=1']);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/no-such-flag/);
});

test('starts from environment variables, reports ready, and exits 0 on SIGTERM', async () => {
  const child = spawn(process.execPath, [CLI], {
    env: {
      PATH: process.env.PATH!,
      ...standaloneServerEnv(certs, dir),
      CLUSTER_PROXY_SHUTDOWN_DELAY: '100ms',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  const line = await new Promise<{ healthPort: number; port: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 15_000);
    child.stdout.on('data', () => {
      const l = out.split('\n').find((x) => x.includes('user-server listening'));
      if (l) {
        clearTimeout(timer);
        resolve(JSON.parse(l));
      }
    });
  });
  expect((await fetch(`http://127.0.0.1:${line.healthPort}/healthz`)).status).toBe(200);
  expect((await fetch(`http://127.0.0.1:${line.healthPort}/readyz`)).status).toBe(200);
  const metrics = await (await fetch(`http://127.0.0.1:${line.healthPort}/metrics`)).text();
  expect(metrics).toContain('cluster_proxy_user_server_requests_total');
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  expect(await exit).toBe(0);
  for (const l of out.split('\n').filter(Boolean)) expect(() => JSON.parse(l)).not.toThrow();
});

test('a stdout that stops draining holds up neither requests nor exit: output beyond --log-buffer-bytes is dropped and counted', async () => {
  const child = spawn(process.execPath, [CLI], {
    env: {
      PATH: process.env.PATH!,
      ...standaloneServerEnv(certs, dir),
      CLUSTER_PROXY_LOG_BUFFER_BYTES: '65536',
      CLUSTER_PROXY_LOG_FLUSH_TIMEOUT: '1s',
      CLUSTER_PROXY_SHUTDOWN_DELAY: '0s',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  const onData = (c: string): void => {
    out += c;
  };
  child.stdout.setEncoding('utf8').on('data', onData);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    await expect.poll(() => out.includes('user-server listening'), { timeout: 15_000 }).toBe(true);
    const { port, healthPort } = JSON.parse(out.split('\n').find((l) => l.includes('user-server listening'))!) as { port: number; healthPort: number };
    // Stop reading: the pipe (64 KiB) and this side's buffer fill, then the server's own buffer.
    child.stdout.removeListener('data', onData);
    child.stdout.pause();
    const pool = new Pool(`https://127.0.0.1:${port}`, { connect: { ca: certs.read('ca.crt'), servername: 'localhost' }, connections: 8 });
    let answered = 0;
    try {
      // The proxy-server socket is absent: each request is a 502 with a warning line of ~500 bytes, ~2 MB in all.
      await Promise.all(Array.from({ length: 8 }, async () => {
        for (let i = 0; i < 500; i++) {
          const res = await pool.request({ path: `/no-agent-${i}/api`, method: 'GET' });
          await res.body.dump();
          if (res.statusCode === 502) answered++;
        }
      }));
    } finally {
      await pool.close();
    }
    expect(answered).toBe(4000);
    const metrics = await (await fetch(`http://127.0.0.1:${healthPort}/metrics`)).text();
    const dropped = Number(/^cluster_proxy_user_server_log_lines_dropped_total (\d+)/m.exec(metrics)?.[1]);
    expect(dropped).toBeGreaterThan(1000);
    // Stopped while nobody reads stdout: the rest of the log gets --log-flush-timeout, then the process exits.
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
    out = '';
    child.stdout.on('data', onData);
    await new Promise((r) => child.stdout.once('end', r));
    // What was written is whole lines, but for the one cut off when the rest was dropped.
    const lines = out.split('\n').slice(0, -1);
    expect(lines.length).toBeGreaterThan(50);
    for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
  } finally {
    child.kill('SIGKILL');
  }
});
