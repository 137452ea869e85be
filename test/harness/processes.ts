import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface Managed {
  name: string;
  child: ChildProcess;
  logFile: string;
  /** Stops the process (SIGTERM, then SIGKILL after 2 s) and waits for it to exit. */
  stop(): Promise<void>;
  log(): string;
}

/** Starts a long-running helper whose output goes to `<dir>/<name>.log`, for post-mortems of failed tests. */
export function startProcess(name: string, command: string, args: string[], dir: string): Managed {
  const logFile = path.join(dir, `${name}.log`);
  const out = createWriteStream(logFile);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    // A binary that cannot be spawned emits 'error' and never 'exit'.
    child.once('error', (err) => {
      out.write(`spawn failed: ${err.message}\n`);
      resolve();
    });
  });
  return {
    name,
    child,
    logFile,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(timer);
    },
    log: () => readFileSync(logFile, 'utf8'),
  };
}

/** Polls `url` until it answers 200, failing with the process log after `timeoutMs`. */
export async function waitForHttp200(url: string, proc: Managed, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null || proc.child.pid === undefined) throw new Error(`${proc.name} exited with ${proc.child.exitCode}:\n${proc.log()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
      last = `${res.status} ${await res.text()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${proc.name} not ready at ${url} after ${timeoutMs} ms (${last}):\n${proc.log()}`);
}

/**
 * A free TCP port in 20000-32767: ANP refuses ports above 49151, so port 0 (the kernel's ephemeral range)
 * cannot be used for it; this range sits below Linux's ephemeral range.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20000 + Math.floor(Math.random() * 12768);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, host, () => s.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free port found');
}

/** A random 127.x.y.0/24 block, so that parallel test files never share service-proxy addresses. */
export function loopbackBlock(): string {
  const a = 16 + Math.floor(Math.random() * 230);
  const b = 1 + Math.floor(Math.random() * 250);
  return `127.${a}.${b}`;
}
