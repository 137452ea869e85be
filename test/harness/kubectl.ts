import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { kubeBin, NAMESPACE } from './kube.ts';

export interface KubeContext {
  /** Context name, passed as --context. */
  name: string;
  /** https://<user-server>/<clusterName> */
  server: string;
  token: string;
}

/** Writes a kubeconfig with one context per entry, all trusting `caFile`, namespace NAMESPACE. */
export function writeKubeconfig(file: string, caFile: string, contexts: KubeContext[]): string {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: contexts.map((c) => ({ name: c.name, cluster: { server: c.server, 'certificate-authority': caFile } })),
    users: contexts.map((c) => ({ name: c.name, user: { token: c.token } })),
    contexts: contexts.map((c) => ({ name: c.name, context: { cluster: c.name, user: c.name, namespace: NAMESPACE } })),
    'current-context': contexts[0]!.name,
  };
  writeFileSync(file, JSON.stringify(config, null, 2), { mode: 0o600 });
  return file;
}

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A running program whose output is collected, with a way to wait for some of it. */
export interface Running {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with stdout once it matches; rejects if the process exits first or after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Ends stdin (if open), then waits for the exit; kills the process after `timeoutMs`. */
  done(timeoutMs?: number): Promise<Result>;
  kill(): Promise<Result>;
}

export function start(command: string, args: string[], env: Record<string, string> = {}): Running {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (err += c.toString('utf8')));
  const exited = new Promise<Result>((resolve) => {
    child.once('close', (code) => resolve({ code, stdout: out, stderr: err }));
    child.once('error', (e) => resolve({ code: -1, stdout: out, stderr: `${err}spawn failed: ${e.message}` }));
  });
  const waitUntilExit = async (timeoutMs: number): Promise<Result> => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const r = await exited;
    clearTimeout(timer);
    return r;
  };
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitFor: (pattern, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = out.match(pattern);
          if (!m) return false;
          cleanup();
          resolve(m);
          return true;
        };
        const onData = () => void check();
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no ${pattern} in ${timeoutMs} ms; stdout:\n${out}\nstderr:\n${err}`));
        }, timeoutMs);
        const onExit = () => {
          if (check()) return;
          cleanup();
          reject(new Error(`${path.basename(command)} exited before ${pattern}; stdout:\n${out}\nstderr:\n${err}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          child.stdout!.off('data', onData);
          child.off('close', onExit);
        };
        if (check()) return;
        child.stdout!.on('data', onData);
        child.once('close', onExit);
      }),
    done: (timeoutMs = 30_000) => {
      child.stdin!.end();
      return waitUntilExit(timeoutMs);
    },
    kill: () => {
      child.kill('SIGTERM');
      return waitUntilExit(5_000);
    },
  };
}

/** Runs the pinned kubectl with `kubeconfig` to completion, feeding it `input` on stdin. */
export function kubectl(kubeconfig: string, args: string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Result> {
  const run = startKubectl(kubeconfig, args, opts.env);
  if (opts.input !== undefined) run.child.stdin!.write(opts.input);
  return run.done(opts.timeoutMs);
}

/** Starts the pinned kubectl with `kubeconfig` and its own discovery cache next to it. */
export function startKubectl(kubeconfig: string, args: string[], env: Record<string, string> = {}): Running {
  const cacheDir = path.join(path.dirname(kubeconfig), 'kubectl-cache');
  return start(kubeBin('kubectl'), [`--kubeconfig=${kubeconfig}`, `--cache-dir=${cacheDir}`, ...args], env);
}
