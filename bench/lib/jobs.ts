import { spawn } from 'node:child_process';
import path from 'node:path';
import { ROOT } from '../../test/harness/certs.ts';
import { NODE } from './proc.ts';

/**
 * Runs a one-shot runner (load generator, watch client) as its own process with a JSON job and returns
 * the JSON it prints. Fails with the runner's stderr if it exits non-zero or overruns `timeoutMs`.
 */
export function runJob<T>(runner: 'loadgen' | 'watch-client', job: object, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [path.join(ROOT, 'bench/runners', `${runner}.ts`), JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) {
        try {
          resolve(JSON.parse(out.trim().split('\n').pop()!) as T);
        } catch {
          reject(new Error(`${runner} printed no result: ${out.slice(0, 500)} ${err.slice(-2000)}`));
        }
      } else {
        reject(new Error(`${runner} ${signal === 'SIGKILL' ? `overran ${timeoutMs} ms` : `exited ${code ?? signal}`}: ${err.slice(-2000)}`));
      }
    });
  });
}

/** A runner that announces readiness with one JSON line and keeps running until stopped (idle watches). */
export function startHolder<T>(job: object, timeoutMs: number): { ready: Promise<T>; stop(): Promise<void> } {
  const child = spawn(NODE, [path.join(ROOT, 'bench/runners/watch-client.ts'), JSON.stringify(job)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err = (err + c).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`watch client not ready within ${timeoutMs} ms: ${err}`));
    }, timeoutMs);
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (out.includes('\n')) {
        clearTimeout(timer);
        resolve(JSON.parse(out.slice(0, out.indexOf('\n'))) as T);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`watch client exited ${code}: ${err}`));
    });
  });
  ready.catch(() => {});
  return {
    ready,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
