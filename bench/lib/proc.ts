import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** The Node 24 binary of the `node` devDependency (an ELF executable, so its pid is the server's pid). */
/** The pinned Node 24 the benchmark itself runs on (npm scripts put it first on PATH). */
export const NODE = process.execPath;

export interface BenchProcess {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  /** The first line printed on stdout, parsed as JSON (runners announce their addresses this way). */
  ready: Promise<unknown>;
  stop(): Promise<void>;
  log(): string;
}

/**
 * Starts a process whose stderr goes straight to a file, so that the benchmark's own process does no
 * work for it. With `announce`, stdout is read for one JSON line; otherwise it goes to the file too.
 */
export function startBenchProcess(name: string, command: string, args: string[], dir: string, opts: { env?: NodeJS.ProcessEnv; announce?: boolean } = {}): BenchProcess {
  const logFile = path.join(dir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const child = spawn(command, args, { stdio: ['ignore', opts.announce ? 'pipe' : fd, fd], env: opts.env ?? process.env });
  closeSync(fd);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  const ready = new Promise<unknown>((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`${name} did not start: ${err.message}`)));
    child.once('exit', (code, signal) => reject(new Error(`${name} exited (${code ?? signal}) before it was ready:\n${readFileSync(logFile, 'utf8').slice(-4000)}`)));
    if (!opts.announce) return;
    let buf = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl !== -1) resolve(JSON.parse(buf.slice(0, nl)));
    });
  });
  ready.catch(() => {});
  return {
    name,
    child,
    pid: child.pid ?? -1,
    logFile,
    ready,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
    log: () => readFileSync(logFile, 'utf8'),
  };
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** CPU seconds (user + system) the process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND;
}

/** Resident set size in MiB, from /proc/<pid>/status. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Number(m[1]) / 1024;
}

/** Samples a process's RSS every `everyMs` until stopped; returns the highest value seen. */
export function sampleRss(pid: number, everyMs = 200): { stop(): number } {
  let max = rssMiB(pid);
  const timer = setInterval(() => {
    try {
      max = Math.max(max, rssMiB(pid));
    } catch {
      // the process went away; the caller notices through its own checks
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      try {
        max = Math.max(max, rssMiB(pid));
      } catch {
        // as above
      }
      return max;
    },
  };
}
