import type { ProxyError, ProxyErrorCode } from '../errors/proxy-error.ts';
import type { DialOutcome } from '../tunnel/dialer.ts';
import type { DialReport, TunnelKind, TunnelTarget } from '../tunnel/open-tunnel.ts';

/**
 * The operator view: what this replica knows about each cluster it served recently, for GET /clusters and
 * the page on the health port. Fed from the places that already count for the metrics (request start and
 * end, dial reports, tunnel open and close) with plain counters and fixed-size rings, so the cost per
 * request is one map lookup, a clock read and a few increments. Holds at most `maxClusters` clusters; a
 * new one pushes out the one seen longest ago, idle ones first. Nothing here comes from a request's
 * headers, path or body: only the cluster name, status codes, error codes and timings.
 */

/** What the last dial to a cluster found; `unknown` until one is made. */
export type AgentState = 'unknown' | 'connected' | 'no_agent' | 'refused' | 'timed_out' | 'tls_failure' | 'proxy_error';

const AGENT_STATE: Record<Exclude<DialOutcome, 'aborted'>, AgentState> = {
  success: 'connected',
  agent_unavailable: 'no_agent',
  agent_dial_failed: 'refused',
  agent_dial_timeout: 'timed_out',
  // ANP does not answer a dial for an agent that died with the request in flight: the wait ends here.
  proxy_timeout: 'timed_out',
  service_proxy_tls_failed: 'tls_failure',
  service_proxy_tls_timeout: 'tls_failure',
  proxy_unreachable: 'proxy_error',
  proxy_tls_failed: 'proxy_error',
  proxy_protocol_error: 'proxy_error',
};

/** The last error in words for the page: fixed text per code, so no upstream or client text is ever shown. */
const ERROR_TEXT: Partial<Record<ProxyErrorCode, string>> = {
  AGENT_UNAVAILABLE: 'no agent is connected to the proxy-server for this cluster',
  AGENT_DIAL_FAILED: "the agent could not reach the cluster's service-proxy (refused or no such host)",
  AGENT_DIAL_TIMEOUT: "the agent's dial to the service-proxy timed out",
  PROXY_UNREACHABLE: 'the ANP proxy-server could not be reached',
  PROXY_TLS_FAILED: 'TLS with the ANP proxy-server failed',
  PROXY_CONNECT_TIMEOUT: 'the proxy-server did not answer the dial in time',
  PROXY_PROTOCOL_ERROR: 'the proxy-server answered something unexpected',
  SERVICE_PROXY_TLS_FAILED: 'TLS with the service-proxy inside the tunnel failed',
  SERVICE_PROXY_TLS_TIMEOUT: 'TLS with the service-proxy inside the tunnel timed out',
  UPSTREAM_FAILED: 'the tunnel failed before the cluster answered',
  UPSTREAM_HEADERS_TIMEOUT: 'the cluster did not answer in time',
  UPGRADE_PROTOCOL_MISMATCH: 'the cluster switched to another protocol than the one asked for',
  CAPACITY_EXCEEDED: 'the proxy had no capacity left',
  SHUTTING_DOWN: 'the replica was shutting down',
};

/** 30 buckets of 10 s: the last 5 minutes, and the sparkline's bars. */
const BUCKET_MS = 10_000;
const BUCKETS = 30;
/** Latency samples kept per cluster for p50 and p99: the most recent dials. */
const LATENCY_SAMPLES = 64;
/** A cluster counts as without agent only while someone still asks for it. */
const WITHOUT_AGENT_WINDOW_MS = BUCKET_MS * BUCKETS;

/** What a tunnel's byte counters are read from (a TLS socket). */
export interface ByteCounters {
  readonly bytesRead: number;
  readonly bytesWritten: number;
}

export type ClusterSort = 'errors' | 'name';

export interface ClusterViewOptions {
  /** Clusters kept; the one seen longest ago is dropped for a new one. */
  maxClusters: number;
  /** The tunnel target host of a cluster: dial and tunnel reports name the host, not the cluster. */
  hostOf: (cluster: string) => string;
  /** Milliseconds since the epoch; tests move it. */
  now?: () => number;
}

/** GET /clusters, documented in the README ("Operating it"); field names are stable. */
export interface ClustersJson {
  generatedAt: string;
  windowSeconds: number;
  bucketSeconds: number;
  clusters: ClusterJson[];
}

export interface ClusterJson {
  name: string;
  lastSeen: string;
  agent: { state: AgentState; since: string | null; lastDial: string | null };
  tunnels: Record<TunnelKind, number>;
  inFlight: number;
  requests5m: number;
  errors5m: number;
  /** Per 10 s bucket, oldest first, the current bucket last. */
  history: { requests: number[]; errors: number[] };
  dialSeconds: Percentiles;
  tlsSeconds: Percentiles;
  bytes: { up: number; down: number };
  lastError: { code: ProxyErrorCode; status: number; text: string; at: string } | null;
}

export interface Percentiles {
  p50: number | null;
  p99: number | null;
  samples: number;
}

/** Counts per time bucket in a ring; stale buckets are zeroed when time moves on. */
class BucketRing {
  private readonly requests = new Uint32Array(BUCKETS);
  private readonly errors = new Uint32Array(BUCKETS);
  private bucket = 0;

  addRequest(nowMs: number): void {
    this.requests[this.advance(nowMs)]!++;
  }

  addError(nowMs: number): void {
    this.errors[this.advance(nowMs)]!++;
  }

  history(nowMs: number): { requests: number[]; errors: number[] } {
    const current = this.advance(nowMs);
    const requests: number[] = [];
    const errors: number[] = [];
    for (let i = 1; i <= BUCKETS; i++) {
      const slot = (current + i) % BUCKETS;
      requests.push(this.requests[slot]!);
      errors.push(this.errors[slot]!);
    }
    return { requests, errors };
  }

  /** The slot of the current bucket, clearing the ones time skipped over. */
  private advance(nowMs: number): number {
    const bucket = Math.floor(nowMs / BUCKET_MS);
    const passed = bucket - this.bucket;
    if (passed > 0) {
      for (let i = 1; i <= Math.min(passed, BUCKETS); i++) {
        const slot = (this.bucket + i) % BUCKETS;
        this.requests[slot] = 0;
        this.errors[slot] = 0;
      }
      this.bucket = bucket;
    }
    return this.bucket % BUCKETS;
  }
}

/** The most recent samples, overwritten in a circle. */
class SampleRing {
  private readonly values = new Float64Array(LATENCY_SAMPLES);
  private count = 0;
  private next = 0;

  add(v: number): void {
    this.values[this.next] = v;
    this.next = (this.next + 1) % LATENCY_SAMPLES;
    if (this.count < LATENCY_SAMPLES) this.count++;
  }

  percentiles(): Percentiles {
    if (this.count === 0) return { p50: null, p99: null, samples: 0 };
    const sorted = this.values.slice(0, this.count).sort();
    // Nearest rank.
    const at = (p: number): number => round(sorted[Math.max(0, Math.ceil(p * this.count) - 1)]!);
    return { p50: at(0.5), p99: at(0.99), samples: this.count };
  }
}

/** One cluster's state; the proxy handler keeps it for the request it serves. */
export class ClusterRecord {
  readonly name: string;
  readonly host: string;
  lastSeenMs: number;
  inFlight = 0;
  agent: AgentState = 'unknown';
  agentSinceMs: number | undefined;
  lastDialMs: number | undefined;
  readonly tunnels: Record<TunnelKind, number> = { short: 0, stream: 0, upgrade: 0 };
  /** Open tunnels, to read their byte counters; bounded by the pools' and upgrades' own limits. */
  readonly openSockets = new Set<ByteCounters>();
  bytesUpClosed = 0;
  bytesDownClosed = 0;
  readonly window = new BucketRing();
  readonly dialSeconds = new SampleRing();
  readonly tlsSeconds = new SampleRing();
  lastError: { code: ProxyErrorCode; status: number; atMs: number } | undefined;
  private readonly now: () => number;

  constructor(name: string, host: string, now: () => number) {
    this.name = name;
    this.host = host;
    this.now = now;
    this.lastSeenMs = now();
  }

  /**
   * The request is over. `error` is the proxy's own answer to it, if it made one; 5xx ones count as
   * errors (4xx ones are the client's doing).
   */
  requestFinished(error: ProxyError | undefined): void {
    this.inFlight--;
    if (error === undefined || error.statusCode < 500) return;
    const now = this.now();
    this.window.addError(now);
    this.lastError = { code: error.code, status: error.statusCode, atMs: now };
  }

  get idle(): boolean {
    return this.inFlight === 0 && this.openSockets.size === 0;
  }
}

export class ClusterView {
  private readonly byName = new Map<string, ClusterRecord>();
  private readonly byHost = new Map<string, ClusterRecord>();
  private readonly maxClusters: number;
  private readonly hostOf: (cluster: string) => string;
  private readonly now: () => number;

  constructor(options: ClusterViewOptions) {
    this.maxClusters = options.maxClusters;
    this.hostOf = options.hostOf;
    this.now = options.now ?? Date.now;
  }

  /** A request to `cluster` was admitted; call requestFinished on the record when it is over. */
  requestStarted(cluster: string): ClusterRecord {
    const now = this.now();
    let record = this.byName.get(cluster);
    if (record === undefined) record = this.add(cluster);
    record.lastSeenMs = now;
    record.inFlight++;
    record.window.addRequest(now);
    return record;
  }

  dialed(target: TunnelTarget, report: DialReport): void {
    if (report.outcome === 'aborted') return;
    const record = this.byHost.get(target.host);
    if (record === undefined) return;
    const now = this.now();
    const state = AGENT_STATE[report.outcome];
    if (state !== record.agent) {
      record.agent = state;
      record.agentSinceMs = now;
    }
    record.lastDialMs = now;
    record.dialSeconds.add(report.connectSeconds);
    if (report.tlsSeconds !== undefined) record.tlsSeconds.add(report.tlsSeconds);
  }

  tunnelOpened(target: TunnelTarget, socket: ByteCounters): void {
    const record = this.byHost.get(target.host);
    if (record === undefined) return;
    record.openSockets.add(socket);
    record.tunnels[target.kind ?? 'short']++;
  }

  tunnelClosed(target: TunnelTarget, socket: ByteCounters): void {
    const record = this.byHost.get(target.host);
    // A record dropped and made anew meanwhile never counted this tunnel.
    if (record === undefined || !record.openSockets.delete(socket)) return;
    record.tunnels[target.kind ?? 'short']--;
    record.bytesUpClosed += socket.bytesWritten;
    record.bytesDownClosed += socket.bytesRead;
  }

  /** Clusters whose last dial found no agent while they were still being asked for (the last 5 minutes). */
  withoutAgent(): number {
    const since = this.now() - WITHOUT_AGENT_WINDOW_MS;
    let n = 0;
    for (const r of this.byName.values()) if (r.agent === 'no_agent' && r.lastSeenMs >= since) n++;
    return n;
  }

  snapshot(sort: ClusterSort): ClustersJson {
    const now = this.now();
    const clusters = [...this.byName.values()].map((r) => toJson(r, now));
    if (sort === 'errors') clusters.sort((a, b) => b.errors5m - a.errors5m || byName(a, b));
    else clusters.sort(byName);
    return envelope(now, clusters);
  }

  /** One cluster, in the same envelope; undefined when it was not seen recently. */
  cluster(name: string): ClustersJson | undefined {
    const r = this.byName.get(name);
    if (r === undefined) return undefined;
    const now = this.now();
    return envelope(now, [toJson(r, now)]);
  }

  get size(): number {
    return this.byName.size;
  }

  private add(cluster: string): ClusterRecord {
    if (this.byName.size >= this.maxClusters) this.evict();
    const record = new ClusterRecord(cluster, this.hostOf(cluster), this.now);
    this.byName.set(cluster, record);
    this.byHost.set(record.host, record);
    return record;
  }

  /** Drops the cluster seen longest ago, preferring one with nothing open. Runs only when full. */
  private evict(): void {
    let oldest: ClusterRecord | undefined;
    let oldestIdle: ClusterRecord | undefined;
    for (const r of this.byName.values()) {
      if (oldest === undefined || r.lastSeenMs < oldest.lastSeenMs) oldest = r;
      if (r.idle && (oldestIdle === undefined || r.lastSeenMs < oldestIdle.lastSeenMs)) oldestIdle = r;
    }
    const victim = oldestIdle ?? oldest;
    if (victim === undefined) return;
    this.byName.delete(victim.name);
    if (this.byHost.get(victim.host) === victim) this.byHost.delete(victim.host);
  }
}

export function isClusterSort(v: string): v is ClusterSort {
  return v === 'errors' || v === 'name';
}

function envelope(now: number, clusters: ClusterJson[]): ClustersJson {
  return { generatedAt: new Date(now).toISOString(), windowSeconds: (BUCKET_MS * BUCKETS) / 1000, bucketSeconds: BUCKET_MS / 1000, clusters };
}

function toJson(r: ClusterRecord, now: number): ClusterJson {
  const history = r.window.history(now);
  let up = r.bytesUpClosed;
  let down = r.bytesDownClosed;
  for (const s of r.openSockets) {
    up += s.bytesWritten;
    down += s.bytesRead;
  }
  const e = r.lastError;
  return {
    name: r.name,
    lastSeen: iso(r.lastSeenMs)!,
    agent: { state: r.agent, since: iso(r.agentSinceMs), lastDial: iso(r.lastDialMs) },
    tunnels: { ...r.tunnels },
    inFlight: r.inFlight,
    requests5m: sum(history.requests),
    errors5m: sum(history.errors),
    history,
    dialSeconds: r.dialSeconds.percentiles(),
    tlsSeconds: r.tlsSeconds.percentiles(),
    bytes: { up, down },
    lastError: e === undefined ? null : { code: e.code, status: e.status, text: ERROR_TEXT[e.code] ?? e.code, at: iso(e.atMs)! },
  };
}

const byName = (a: ClusterJson, b: ClusterJson): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

function sum(values: number[]): number {
  let n = 0;
  for (const v of values) n += v;
  return n;
}

function iso(ms: number | undefined): string | null {
  return ms === undefined ? null : new Date(ms).toISOString();
}

/** Microsecond precision is plenty for a dial. */
function round(seconds: number): number {
  return Math.round(seconds * 1e6) / 1e6;
}
