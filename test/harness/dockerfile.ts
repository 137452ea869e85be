import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync } from 'node:fs';
import path from 'node:path';

/**
 * Just enough of the Dockerfile language to replay this project's Dockerfile without a container
 * engine: ARG (global defaults), FROM ... AS, WORKDIR, COPY [--from], RUN, ENV, USER, EXPOSE,
 * ENTRYPOINT and CMD. Anything else is refused, so that the replay never silently skips a step.
 */
export interface Instruction {
  op: 'WORKDIR' | 'COPY' | 'RUN' | 'ENV' | 'USER' | 'EXPOSE' | 'ENTRYPOINT' | 'CMD';
  args: string;
  line: number;
}

export interface Stage {
  name: string;
  image: string;
  instructions: Instruction[];
}

export function parseDockerfile(text: string): Stage[] {
  const globals: Record<string, string> = {};
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    // Continuations; comment lines inside a continued instruction are dropped, as Docker does.
    while (line.endsWith('\\') && i + 1 < lines.length) {
      line = line.slice(0, -1);
      i++;
      if (!/^\s*#/.test(lines[i]!)) line += ` ${lines[i]!.trim()}`;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (m === null) throw new Error(`Dockerfile line ${start}: cannot parse ${JSON.stringify(line)}`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (op === 'ARG') {
      if (stages.length > 0) throw new Error(`Dockerfile line ${start}: ARG inside a stage is not replayed`);
      const [k, v] = splitOnce(args, '=');
      globals[k] = v ?? '';
    } else if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (f === null) throw new Error(`Dockerfile line ${start}: cannot parse FROM ${args}`);
      const image = f[1]!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => globals[(a ?? b)!] ?? '');
      stages.push({ name: f[2] ?? String(stages.length), image, instructions: [] });
    } else if (['WORKDIR', 'COPY', 'RUN', 'ENV', 'USER', 'EXPOSE', 'ENTRYPOINT', 'CMD'].includes(op)) {
      const stage = stages.at(-1);
      if (stage === undefined) throw new Error(`Dockerfile line ${start}: ${op} before FROM`);
      stage.instructions.push({ op: op as Instruction['op'], args, line: start });
    } else {
      throw new Error(`Dockerfile line ${start}: ${op} is not replayed here; teach test/harness/dockerfile.ts`);
    }
  }
  return stages;
}

/** ENTRYPOINT/CMD in exec (JSON) form; shell form would need a shell in the image and hide signals from node. */
export function execForm(ins: Instruction): string[] {
  let v: unknown;
  try {
    v = JSON.parse(ins.args);
  } catch {
    throw new Error(`Dockerfile line ${ins.line}: ${ins.op} is not in exec (JSON array) form`);
  }
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`Dockerfile line ${ins.line}: ${ins.op} must be a JSON array of strings`);
  return v as string[];
}

/** A .dockerignore as Docker reads it: the last matching pattern wins, and a pattern matching a parent directory matches its files. */
export interface DockerIgnore {
  ignored(rel: string): boolean;
  /** Whether a `!pattern` may bring back something below an ignored folder. */
  reincludesUnder(dir: string): boolean;
}

export function dockerignore(text: string): DockerIgnore {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const include = l.startsWith('!');
      const pattern = path.posix.normalize((include ? l.slice(1) : l).replace(/^\/+/, '')).replace(/\/+$/, '');
      return { include, pattern, regex: globRegex(pattern) };
    });
  const ignored = (rel: string): boolean => {
    const parts = rel.split('/');
    let excluded = false;
    for (const r of rules) {
      for (let n = 1; n <= parts.length; n++) {
        if (r.regex.test(parts.slice(0, n).join('/'))) {
          excluded = !r.include;
          break;
        }
      }
    }
    return excluded;
  };
  return { ignored, reincludesUnder: (dir) => rules.some((r) => r.include && r.pattern.startsWith(`${dir}/`)) };
}

/** Go's filepath.Match plus `**`, as Docker uses: unlike shell globs, `*` also matches names starting with a dot. */
function globRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      re += '.*';
      i++;
      if (pattern[i + 1] === '/') i++;
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[' && pattern.indexOf(']', i) > i) {
      const end = pattern.indexOf(']', i);
      re += pattern.slice(i, end + 1).replace(/^\[!/, '[^');
      i = end;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export interface ReplayedImage {
  /** The final stage's file system, as a folder. */
  root: string;
  workdir: string;
  env: Record<string, string>;
  user: string | undefined;
  command: string[];
  exposed: number[];
  stages: Stage[];
}

/**
 * Builds every stage into `<dir>/<stage>/` from a build context filtered by .dockerignore, running each
 * RUN with `sh -c` and `bin` first on PATH (the image's node and npm). Stages run in file order, as
 * each one may only copy from earlier ones.
 */
export function replayBuild(opts: { dockerfile: string; context: string; dir: string; bin: string; log: (s: string) => void }): ReplayedImage {
  const stages = parseDockerfile(readFileSync(opts.dockerfile, 'utf8'));
  const ignorePath = path.join(opts.context, '.dockerignore');
  const ignore = dockerignore(existsSync(ignorePath) ? readFileSync(ignorePath, 'utf8') : '');
  const context = path.join(opts.dir, 'context');
  copyContext(opts.context, context, '', ignore);
  const roots = new Map<string, string>();
  let last: ReplayedImage | undefined;
  for (const [i, stage] of stages.entries()) {
    const root = path.join(opts.dir, `stage-${i}-${stage.name}`);
    mkdirSync(root, { recursive: true, mode: 0o755 });
    roots.set(stage.name, root);
    let workdir: string | undefined;
    const env: Record<string, string> = {};
    let user: string | undefined;
    let entrypoint: string[] = [];
    let cmd: string[] = [];
    const exposed: number[] = [];
    const inStage = (p: string): string => path.join(root, p);
    for (const ins of stage.instructions) {
      const where = `Dockerfile line ${ins.line} (${stage.name})`;
      switch (ins.op) {
        case 'WORKDIR':
          workdir = path.posix.resolve(workdir ?? '/', ins.args);
          mkdirSync(inStage(workdir), { recursive: true, mode: 0o755 });
          break;
        case 'COPY': {
          if (workdir === undefined) throw new Error(`${where}: COPY before WORKDIR depends on the base image`);
          const words = ins.args.split(/\s+/);
          const from = words[0]!.startsWith('--from=') ? words.shift()!.slice('--from='.length) : undefined;
          if (words.some((w) => w.startsWith('--'))) throw new Error(`${where}: COPY option not replayed: ${ins.args}`);
          const dest = words.pop()!;
          const srcRoot = from === undefined ? context : roots.get(from);
          if (srcRoot === undefined) throw new Error(`${where}: no earlier stage ${from}`);
          const destAbs = inStage(path.posix.resolve(workdir, dest));
          for (const src of words) {
            const s = path.join(srcRoot, from === undefined ? src : path.posix.resolve('/', src));
            if (!existsSync(s)) throw new Error(`${where}: ${src} is not in the ${from === undefined ? 'build context (see .dockerignore)' : `stage ${from}`}`);
            if (statSync(s).isDirectory()) cpSync(s, destAbs, { recursive: true, verbatimSymlinks: true });
            else if (dest.endsWith('/') || words.length > 1) cpSync(s, path.join(destAbs, path.basename(s)));
            else cpSync(s, destAbs);
          }
          break;
        }
        case 'RUN': {
          if (workdir === undefined) throw new Error(`${where}: RUN before WORKDIR depends on the base image`);
          opts.log(`${where}: RUN ${ins.args}`);
          execFileSync('sh', ['-c', ins.args], {
            cwd: inStage(workdir),
            env: { ...process.env, ...env, PATH: `${opts.bin}:${process.env.PATH}` },
            stdio: ['ignore', 'pipe', 'pipe'],
            timeout: 300_000,
          });
          break;
        }
        case 'ENV':
          for (const [k, v] of parseEnv(ins.args)) env[k] = v;
          break;
        case 'USER':
          user = ins.args;
          break;
        case 'EXPOSE':
          exposed.push(...ins.args.split(/\s+/).map((p) => Number(p.split('/')[0])));
          break;
        case 'ENTRYPOINT':
          entrypoint = execForm(ins);
          cmd = [];
          break;
        case 'CMD':
          cmd = execForm(ins);
          break;
      }
    }
    last = { root, workdir: workdir ?? '/', env, user, command: [...entrypoint, ...cmd], exposed, stages };
  }
  if (last === undefined) throw new Error('Dockerfile has no stage');
  // Every path of the image must be reachable by any user, as in a container file system.
  chmodSync(opts.dir, 0o755);
  return last;
}

function copyContext(from: string, to: string, rel: string, ignore: DockerIgnore): void {
  for (const entry of readdirSync(path.join(from, rel), { withFileTypes: true })) {
    const r = rel === '' ? entry.name : `${rel}/${entry.name}`;
    if (entry.isDirectory()) {
      // A folder excluded with nothing re-included below it is not walked (node_modules, .git).
      if (ignore.ignored(r) && !ignore.reincludesUnder(r)) continue;
      copyContext(from, to, r, ignore);
    } else if (!ignore.ignored(r)) {
      mkdirSync(path.join(to, rel), { recursive: true, mode: 0o755 });
      // A symbolic link travels as a link, never as what it points to.
      if (entry.isSymbolicLink()) symlinkSync(readlinkSync(path.join(from, r)), path.join(to, r));
      else cpSync(path.join(from, r), path.join(to, r));
    }
  }
}

function parseEnv(args: string): [string, string][] {
  if (!args.includes('=')) {
    const [k, v] = splitOnce(args, ' ');
    return [[k, (v ?? '').trim()]];
  }
  return args.split(/\s+/).map((kv) => {
    const [k, v] = splitOnce(kv, '=');
    return [k, (v ?? '').replace(/^"(.*)"$/, '$1')];
  });
}

function splitOnce(s: string, sep: string): [string, string | undefined] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + sep.length)];
}
