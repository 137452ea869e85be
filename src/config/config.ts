import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { compileTargetTemplate } from '../tunnel/target-host.ts';
import { IGNORED_FLAGS, SETTINGS, type SettingName, type SettingSpec } from './settings.ts';

export interface Config {
  /** Which ANP frontend the proxy-server runs: one dialer speaks each. */
  proxyMode: 'grpc' | 'http-connect';
  /** gRPC mode's connection set. */
  grpc: { connections: number; keepaliveIntervalMs: number };
  server: {
    address: string;
    port: number;
    certFile: string;
    keyFile: string;
    minVersion: 'TLSv1.2' | 'TLSv1.3';
    /** One bound for HTTP/1.1 (maxHeaderSize) and HTTP/2 (SETTINGS_MAX_HEADER_LIST_SIZE). */
    maxHeaderBytes: number;
    /** Open client TLS connections, both protocols (net.Server maxConnections). */
    maxConnections: number;
    /** HTTP/1.1 headersTimeout; requests (bodies) themselves are never timed. */
    requestHeadersTimeoutMs: number;
    unknownProtocolTimeoutMs: number;
    http2: FrontHttp2Limits;
  };
  health: { address: string; port: number };
  proxy:
    | { transport: 'tcp'; host: string; port: number; servername: string; caFile: string; certFile: string; keyFile: string }
    | { transport: 'uds'; path: string };
  serviceProxyCaFile: string;
  /** Client Impersonate-* headers: passed on, stripped, or the request refused (403). */
  impersonation: 'pass' | 'strip' | 'refuse';
  /** Services reachable through proxy-service paths; undefined: none (default deny). May be missing at start. */
  exposedServicesFile: string | undefined;
  targetTemplate: string;
  timeouts: { connectMs: number; tlsHandshakeMs: number; responseHeadersMs: number; clientStallMs: number; idleTunnelMs: number; tunnelPingMs: number; upgradeIdleMs: number; cancelledDrainMs: number };
  limits: { maxTunnelsPerCluster: number; maxStreamsPerCluster: number; maxStreamsPerTunnel: number; maxRequestsPerCluster: number; maxUpgradesPerCluster: number; maxClusters: number; cancelledDrainBytes: number; cancelledTunnelsPerConnection: number };
  agentRetryAfterSeconds: number;
  tls: { reloadIntervalMs: number };
  shutdown: { delayMs: number; graceMs: number };
  metrics: { clusterLabelLimit: number };
  /** Per-cluster state for GET /clusters and the health port's page. */
  clusterView: boolean;
  log: { level: string; access: boolean; bufferBytes: number; flushTimeoutMs: number };
}

/** The HTTP/2 front's per-connection limits, as Node's http2 server options name them. */
export interface FrontHttp2Limits {
  maxConcurrentStreams: number;
  /** streamResetBurst and streamResetRate: Node only applies them when both are set. */
  streamResetBurst: number;
  streamResetRate: number;
  maxSessionInvalidFrames: number;
  maxSessionRejectedStreams: number;
  maxHeaderListPairs: number;
  /** Megabytes, as Node's maxSessionMemory. */
  maxSessionMemory: number;
  /** An HTTP/2 connection idle this long gets GOAWAY (the session's timeout). */
  idleTimeoutMs: number;
}

/** A setting that cannot be used; the message names it, as the operator typed it. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

type Raw = Partial<Record<SettingName, string>>;

/** Flags win over environment variables, which win over defaults. */
export function readSettings(argv: readonly string[], environment: NodeJS.ProcessEnv): { values: Raw; help: boolean } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean' }, v: { type: 'string', short: 'v' } };
  for (const name of FLAG_NAMES) options[name] = { type: 'string' };
  const args = normalizeArgs(withoutUpstreamCommand(argv));
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}; see --help`);
  }
  const flags = parsed.values as Record<string, string | boolean | undefined>;
  const values: Raw = {};
  for (const s of SETTINGS as readonly SettingSpec[]) {
    // An empty variable counts as unset, so `FOO=` in a manifest falls back to the default.
    const fromEnv = environment[s.env] === '' ? undefined : environment[s.env];
    const v = flagValue(s, flags) ?? fromEnv ?? s.default;
    if (v !== undefined) values[s.flag as SettingName] = v;
  }
  // klog's -v=4 and up is where the Go user-server logs its dials and requests: the nearest here is debug.
  // A log level set on purpose, by flag or environment, still wins.
  const verbosity = parseVerbosity(flags.v as string | undefined);
  const levelGiven = flags['log-level'] !== undefined || (environment[specOf('log-level').env] ?? '') !== '';
  if (verbosity !== undefined && verbosity >= 4 && !levelGiven) values['log-level'] = 'debug';
  return { values, help: flags.help === true };
}

/** Every long flag name the command line takes: our settings, the Go user-server's names for them, and the flags it alone used. */
const FLAG_NAMES: ReadonlySet<string> = new Set([...(SETTINGS as readonly SettingSpec[]).flatMap((s) => [s.flag, ...(s.aliases ?? [])]), ...IGNORED_FLAGS]);

/** A setting's value from the command line: its flag or an alias; both with different values is refused, since either guess may be wrong. */
function flagValue(s: SettingSpec, flags: Record<string, string | boolean | undefined>): string | undefined {
  const given = [s.flag, ...(s.aliases ?? [])].filter((name) => flags[name] !== undefined) as string[];
  const first = given[0];
  if (first === undefined) return undefined;
  const other = given.find((name) => flags[name] !== flags[first]);
  if (other !== undefined) {
    throw new ConfigError(`--${first} and --${other} name the same setting with different values (${JSON.stringify(flags[first])} and ${JSON.stringify(flags[other])}): pick one`);
  }
  return flags[first] as string;
}

/**
 * The Go image runs `/cluster-proxy user-server --host=...`, and its Deployments pass `user-server` as the
 * first argument: both prefixes are dropped, so the same arguments start this server.
 */
function withoutUpstreamCommand(argv: readonly string[]): readonly string[] {
  if (argv[0] === 'user-server') return argv.slice(1);
  if (argv[0] !== undefined && !argv[0].startsWith('-') && /(^|\/)cluster-proxy$/.test(argv[0])) {
    if (argv[1] === 'user-server') return argv.slice(2);
    throw new ConfigError(`${JSON.stringify(argv[0])} is followed by ${JSON.stringify(argv[1] ?? '')}: only its user-server subcommand is served here; see --help`);
  }
  return argv;
}

/**
 * The Go user-server's flag spellings, in the forms parseArgs reads: pflag's WordSepNormalizeFunc makes
 * `_` and `-` the same in flag names, and pflag reads `-v=4` as -v with value 4 where parseArgs would keep
 * the `=`. A name that is unknown either way is left as typed, so the error quotes it as typed.
 */
function normalizeArgs(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    // After `--` every argument is positional, and refused as one, as written.
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (arg.startsWith('-v=')) {
      out.push(`--v=${arg.slice(3)}`);
      continue;
    }
    const m = /^--([^=]+)(=.*)?$/s.exec(arg);
    const name = m?.[1]?.replaceAll('_', '-');
    out.push(m !== null && name !== undefined && (FLAG_NAMES.has(name) || name === 'v' || name === 'help') ? `--${name}${m[2] ?? ''}` : arg);
  }
  return out;
}

/** klog's -v: a whole number, as klog itself requires; it only ever chooses the log level here. */
function parseVerbosity(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^-?\d+$/.test(v)) throw new ConfigError(`-v (klog verbosity) must be a whole number, got ${JSON.stringify(v)}`);
  return Number(v);
}

export function buildConfig(raw: Raw): Config {
  const get = <T>(name: SettingName, parse: (v: string, s: SettingSpec) => T): T | undefined => {
    const v = raw[name];
    if (v === undefined || v === '') return undefined;
    return parse(v, specOf(name));
  };
  const required = <T>(name: SettingName, parse: (v: string, s: SettingSpec) => T, why = 'is required'): T => {
    const v = get(name, parse);
    if (v === undefined) throw new ConfigError(`${label(specOf(name))} ${why}`);
    return v;
  };

  const uds = get('proxy-server-uds', parseString);
  const host = get('proxy-server-host', parseString);
  let proxy: Config['proxy'];
  if (uds !== undefined) {
    if (host !== undefined) throw new ConfigError(`${label(specOf('proxy-server-uds'))} and ${label(specOf('proxy-server-host'))} exclude each other: pick one`);
    proxy = { transport: 'uds', path: uds };
  } else {
    const why = 'is required when the proxy-server is reached over TCP (or set --proxy-server-uds)';
    const h = required('proxy-server-host', parseString, 'or --proxy-server-uds is required');
    proxy = {
      transport: 'tcp',
      host: h,
      port: required('proxy-server-port', parsePort),
      servername: get('proxy-server-name', parseString) ?? h,
      caFile: required('proxy-ca-cert', parseFile, why),
      certFile: required('proxy-cert', parseFile, why),
      keyFile: required('proxy-key', parseFile, why),
    };
  }

  const targetTemplate = required('target-template', parseString);
  try {
    compileTargetTemplate(targetTemplate);
  } catch (err) {
    throw new ConfigError(`${label(specOf('target-template'))}: ${(err as Error).message}`);
  }
  const connectMs = required('connect-timeout', parseDuration);
  if (connectMs < 1000) throw new ConfigError(`${label(specOf('connect-timeout'))} must be at least 1s (ANP's agent dial alone may take 5s)`);
  const keepaliveIntervalMs = required('proxy-keepalive-interval', parseDuration);
  if (keepaliveIntervalMs !== 0 && keepaliveIntervalMs < MIN_GRPC_KEEPALIVE_MS) {
    throw new ConfigError(`${label(specOf('proxy-keepalive-interval'))} must be 0 (off) or at least 5m: ANP's gRPC frontend answers pings closer than 5 minutes with GOAWAY too_many_pings, which drops every tunnel on the connection`);
  }

  return {
    proxyMode: required('proxy-mode', parseEnum) as Config['proxyMode'],
    grpc: { connections: required('proxy-connections', parseCount), keepaliveIntervalMs },
    server: {
      address: required('server-address', parseString),
      port: required('server-port', parsePort),
      certFile: required('server-cert', parseFile),
      keyFile: required('server-key', parseFile),
      minVersion: required('tls-min-version', parseEnum) as 'TLSv1.2' | 'TLSv1.3',
      maxHeaderBytes: required('max-header-bytes', parseUint32Count),
      maxConnections: required('max-connections', parseCount),
      requestHeadersTimeoutMs: positive('request-headers-timeout', required('request-headers-timeout', parseDuration)),
      unknownProtocolTimeoutMs: positive('unknown-protocol-timeout', required('unknown-protocol-timeout', parseDuration)),
      http2: {
        maxConcurrentStreams: required('http2-max-concurrent-streams', parseUint32Count),
        streamResetBurst: required('http2-stream-reset-burst', parseUint32Count),
        streamResetRate: required('http2-stream-reset-rate', parseUint32Count),
        maxSessionInvalidFrames: required('http2-max-invalid-frames', parseUint32Count),
        maxSessionRejectedStreams: required('http2-max-rejected-streams', parseUint32Count),
        maxHeaderListPairs: atLeast('http2-max-header-pairs', required('http2-max-header-pairs', parseUint32Count), 4, 'the four request pseudo-headers count'),
        maxSessionMemory: required('http2-max-session-memory', parseUint32Count),
        idleTimeoutMs: positive('http2-idle-timeout', required('http2-idle-timeout', parseDuration)),
      },
    },
    health: { address: required('health-address', parseString), port: required('health-port', parsePort) },
    proxy,
    serviceProxyCaFile: required('service-proxy-ca-cert', parseFile),
    impersonation: required('impersonation', parseEnum) as Config['impersonation'],
    // Not checked for existence: an optional ConfigMap volume has no file until the ConfigMap exists (deny all).
    exposedServicesFile: get('exposed-services-file', parseString),
    targetTemplate,
    timeouts: {
      connectMs,
      tlsHandshakeMs: positive('tls-handshake-timeout', required('tls-handshake-timeout', parseDuration)),
      responseHeadersMs: required('response-headers-timeout', parseDuration),
      clientStallMs: required('client-stall-timeout', parseDuration),
      idleTunnelMs: positive('idle-tunnel-timeout', required('idle-tunnel-timeout', parseDuration)),
      upgradeIdleMs: required('upgrade-idle-timeout', parseDuration),
      tunnelPingMs: required('tunnel-ping-interval', parseDuration),
      cancelledDrainMs: required('cancelled-drain-timeout', parseDuration),
    },
    limits: {
      maxTunnelsPerCluster: required('max-tunnels-per-cluster', parseCount),
      maxStreamsPerCluster: required('max-streams-per-cluster', parseCount),
      maxStreamsPerTunnel: required('max-streams-per-tunnel', parseCountOrZero),
      maxRequestsPerCluster: required('max-requests-per-cluster', parseCount),
      maxUpgradesPerCluster: required('max-upgrades-per-cluster', parseCount),
      maxClusters: required('max-clusters', parseCount),
      cancelledDrainBytes: required('cancelled-drain-bytes', parseCountOrZero),
      cancelledTunnelsPerConnection: required('cancelled-tunnels-per-connection', parseCount),
    },
    agentRetryAfterSeconds: Math.max(1, Math.round(required('agent-retry-after', parseDuration) / 1000)),
    tls: { reloadIntervalMs: required('tls-reload-interval', parseDuration) },
    shutdown: { delayMs: required('shutdown-delay', parseDuration), graceMs: required('shutdown-grace', parseDuration) },
    metrics: { clusterLabelLimit: required('metrics-cluster-labels', parseCountOrZero) },
    clusterView: required('cluster-view', parseBoolean),
    log: { level: required('log-level', parseEnum), access: required('access-log', parseBoolean), bufferBytes: required('log-buffer-bytes', parseCount), flushTimeoutMs: required('log-flush-timeout', parseDuration) },
  };
}

export function loadConfig(argv: readonly string[], environment: NodeJS.ProcessEnv): { config?: Config; help: boolean } {
  const { values, help } = readSettings(argv, environment);
  if (help) return { help };
  return { config: buildConfig(values), help };
}

export function helpText(): string {
  const lines = ['Usage: cluster-proxy-user-server [flags]', '', 'Every flag can also be set with the environment variable shown.', ''];
  for (const s of SETTINGS as readonly SettingSpec[]) {
    const def = s.default === undefined ? '' : ` (default ${s.default})`;
    const aliases = (s.aliases ?? []).map((a) => `, --${a}`).join('');
    lines.push(`  --${s.flag} <${s.type}>${aliases}   ${s.env}`, `      ${s.help}${def}`);
  }
  lines.push(
    '',
    'Durations are written like 500ms, 10s, 2m or 1h; 0 disables where noted.',
    '',
    "The Go user-server's command line works as it is: a leading `user-server` (or `/cluster-proxy user-server`)",
    'is skipped, `_` and `-` are the same in flag names, --host and --port name the proxy-server,',
    `${IGNORED_FLAGS.map((f) => `--${f}`).join(', ')} is accepted and ignored, and klog's -v=N is accepted: 4 or more means`,
    `--log-level=debug unless --log-level or ${specOf('log-level').env} is set, and lower values change nothing.`,
  );
  return lines.join('\n');
}

function specOf(name: SettingName): SettingSpec {
  return SETTINGS.find((s) => s.flag === name)!;
}

/** How messages name a setting: as the operator may have written it, flag or environment variable. */
export function settingLabel(name: SettingName): string {
  return label(specOf(name));
}

function label(s: SettingSpec): string {
  return `--${s.flag} (${s.env})`;
}

function positive(name: SettingName, v: number): number {
  if (v <= 0) throw new ConfigError(`${label(specOf(name))} must be greater than 0`);
  return v;
}

function atLeast(name: SettingName, v: number, min: number, why: string): number {
  if (v < min) throw new ConfigError(`${label(specOf(name))} must be at least ${min} (${why}), got ${v}`);
  return v;
}

function parseString(v: string): string {
  return v;
}

function parseFile(v: string, s: SettingSpec): string {
  if (!existsSync(v)) throw new ConfigError(`${label(s)}: file ${JSON.stringify(v)} does not exist`);
  return v;
}

function parsePort(v: string, s: SettingSpec): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new ConfigError(`${label(s)} must be a port number from 0 to 65535, got ${JSON.stringify(v)}`);
  return n;
}

function parseCount(v: string, s: SettingSpec): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || !Number.isSafeInteger(n)) throw new ConfigError(`${label(s)} must be a whole number of at least 1, got ${JSON.stringify(v)}`);
  return n;
}

/** Node's HTTP/2 options and SETTINGS values are 32-bit. */
function parseUint32Count(v: string, s: SettingSpec): number {
  const n = parseCount(v, s);
  if (n > 0xffff_ffff) throw new ConfigError(`${label(s)} must be at most 4294967295, got ${JSON.stringify(v)}`);
  return n;
}

function parseCountOrZero(v: string, s: SettingSpec): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) throw new ConfigError(`${label(s)} must be a whole number (0 or more), got ${JSON.stringify(v)}`);
  return n;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

/** grpc-go's default keepalive enforcement (MinTime), which ANP's frontend does not change. */
const MIN_GRPC_KEEPALIVE_MS = 5 * 60_000;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go-style durations (10s, 500ms, 2m, 1h) in milliseconds; a bare 0 is allowed. */
export function parseDuration(v: string, s: SettingSpec): number {
  if (v === '0') return 0;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v);
  if (m === null) throw new ConfigError(`${label(s)} must be a duration such as 500ms, 10s or 2m, got ${JSON.stringify(v)}`);
  const ms = Math.round(Number(m[1]) * UNIT_MS[m[2]!]!);
  // Node's timers turn longer delays into 1 ms.
  if (ms > MAX_TIMER_MS) throw new ConfigError(`${label(s)} must be at most ${MAX_TIMER_MS} ms (about 596h), got ${JSON.stringify(v)}`);
  return ms;
}

function parseBoolean(v: string, s: SettingSpec): boolean {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new ConfigError(`${label(s)} must be true or false, got ${JSON.stringify(v)}`);
}

function parseEnum(v: string, s: SettingSpec): string {
  if (!s.choices?.includes(v)) throw new ConfigError(`${label(s)} must be one of ${s.choices?.join(', ')}, got ${JSON.stringify(v)}`);
  return v;
}
