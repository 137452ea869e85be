import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ProxyError } from '../errors/proxy-error.ts';
import type { DialReport } from '../tunnel/open-tunnel.ts';
import { BoundedLabel } from './bounded-label.ts';
import { GridCounter, GridGauge, GridHistogram, type LabelSpace } from './hot-series.ts';

const PREFIX = 'cluster_proxy_user_server_';

/** Buckets from 1 ms to ~2 min: covers pooled requests, cold tunnels and ANP's 5 s dial timeout. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export type RequestKind = 'kube' | 'service' | 'upgrade' | 'invalid';

const KINDS: LabelSpace = { name: 'kind', values: ['kube', 'service', 'upgrade', 'invalid'] satisfies RequestKind[] };
const KIND_INDEX: Record<RequestKind, number> = { kube: 0, service: 1, upgrade: 2, invalid: 3 };
/** Status classes; "other" for a status outside 100-599 that an upstream may still send. */
const CODES: LabelSpace = { name: 'code', values: ['aborted', '1xx', '2xx', '3xx', '4xx', '5xx', 'other'] };
const METHODS: LabelSpace = { name: 'method', values: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'OTHER'] };
const METHOD_INDEX = new Map(METHODS.values.map((m, i) => [m, i]));
const OTHER_METHOD = METHODS.values.length - 1;

/** Which certificate material a reload concerns. */
export type TlsSource = 'serving' | 'proxy_client' | 'service_proxy_ca';

export interface MetricsOptions {
  /**
   * Clusters that get their own `cluster` label on requests_by_cluster_total; the rest are folded into
   * "other". 0 (the default) leaves that metric out, so no series is ever per cluster.
   */
  clusterLabelLimit?: number;
}

/**
 * All metrics, behind typed helpers so that labels stay bounded: code class (2xx...), method (a fixed
 * set), request kind, dial outcome, TLS source. Per-cluster series exist only when opted in, and then
 * for at most `clusterLabelLimit` clusters.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests: GridCounter;
  private readonly duration: GridHistogram;
  private readonly inFlight: GridGauge;
  private readonly dials: Counter<'outcome'>;
  private readonly dialSeconds: Histogram;
  private readonly tlsSeconds: Histogram;
  private readonly firstByteSeconds: GridHistogram;
  private readonly tunnelsOpen: Gauge;
  private readonly proxyConnectionsOpen: Gauge;
  private readonly upgradedSessions: Gauge;
  private readonly tlsReloads: Counter<'source' | 'outcome'>;
  private readonly tlsNotAfter: Gauge<'source'>;
  private readonly logDropped: Counter;
  private readonly proxyErrors: Counter<'code' | 'status'>;
  private clustersWithoutAgent: (() => number) | undefined;
  private readonly retries: Counter;
  private readonly keptAfterCancel: Counter;
  private readonly clusterRequests: Counter<'cluster' | 'code'> | undefined;
  private readonly clusterLabel: BoundedLabel | undefined;

  constructor(options: MetricsOptions = {}) {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    const registers = [this.registry];
    // The series every request updates: plain arrays, read at scrape time (hot-series.ts).
    this.requests = new GridCounter(`${PREFIX}requests_total`, 'Requests by status class, method and kind.', [CODES, METHODS, KINDS]);
    this.duration = new GridHistogram(`${PREFIX}request_duration_seconds`, 'Time from request to the end of the response.', LATENCY_BUCKETS, KINDS);
    this.inFlight = new GridGauge(`${PREFIX}requests_in_flight`, 'Requests being served, upgraded sessions included.', KINDS);
    this.firstByteSeconds = new GridHistogram(`${PREFIX}time_to_first_byte_seconds`, 'Time from dispatch to the upstream response headers.', LATENCY_BUCKETS, KINDS);
    for (const m of [this.requests, this.duration, this.inFlight, this.firstByteSeconds]) this.registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0]);
    this.dials = new Counter({ name: `${PREFIX}tunnel_dials_total`, help: 'Tunnels opened through ANP (CONNECT or gRPC), by outcome.', labelNames: ['outcome'], registers });
    this.dialSeconds = new Histogram({ name: `${PREFIX}tunnel_connect_seconds`, help: 'Time until the agent dial was answered (CONNECT reply or gRPC DIAL_RSP).', buckets: LATENCY_BUCKETS, registers });
    this.tlsSeconds = new Histogram({ name: `${PREFIX}tunnel_tls_seconds`, help: 'TLS handshake with the service-proxy inside the tunnel.', buckets: LATENCY_BUCKETS, registers });
    this.upgradedSessions = new Gauge({ name: `${PREFIX}upgraded_sessions`, help: 'Upgraded sessions (exec, attach, port-forward) past their 101, still open.', registers });
    this.tunnelsOpen = new Gauge({ name: `${PREFIX}tunnels_open`, help: 'Tunnels currently open (pooled and upgraded).', registers });
    this.proxyConnectionsOpen = new Gauge({ name: `${PREFIX}proxy_server_connections`, help: 'HTTP/2 connections to the ANP proxy-server that carry gRPC tunnels (gRPC mode; always 0 in http-connect mode, where each tunnel is a connection).', registers });
    this.tlsReloads = new Counter({ name: `${PREFIX}tls_reloads_total`, help: 'Certificate reloads after their files changed, by material and outcome (a failure keeps the previous certificates).', labelNames: ['source', 'outcome'], registers });
    this.tlsNotAfter = new Gauge({ name: `${PREFIX}tls_certificate_not_after_seconds`, help: 'Expiry (Unix time) of the certificate in use, by material; the earliest one for CA bundles.', labelNames: ['source'], registers });
    this.logDropped = new Counter({ name: `${PREFIX}log_lines_dropped_total`, help: 'Log lines dropped because stdout did not drain and --log-buffer-bytes was full.', registers });
    // Labels from the fixed table of error codes, each with its one status: requests_total cannot tell the
    // proxy's own 5xx from a managed cluster's.
    this.proxyErrors = new Counter({ name: `${PREFIX}proxy_errors_total`, help: 'Status answers the proxy made itself for routed requests (refusals, failed dials, timeouts), by error code and HTTP status.', labelNames: ['code', 'status'], registers });
    const view = (): number => this.clustersWithoutAgent?.() ?? 0;
    // Registered, and read at each scrape: nothing else touches it.
    new Gauge({
      name: `${PREFIX}clusters_without_agent`,
      help: 'Clusters still asked for in the last 5 minutes whose last dial found no agent connected (from the cluster view; always 0 with --cluster-view=false).',
      registers,
      collect() {
        this.set(view());
      },
    });
    this.retries = new Counter({ name: `${PREFIX}tunnel_retries_total`, help: 'Safe requests without a body sent a second time because their pooled tunnel closed before any answer.', registers });
    this.keptAfterCancel = new Counter({ name: `${PREFIX}tunnels_kept_after_cancel_total`, help: 'Requests cancelled by their client that were left to finish upstream (response dropped) so that their tunnel stayed pooled.', registers });
    const limit = options.clusterLabelLimit ?? 0;
    if (limit > 0) {
      this.clusterLabel = new BoundedLabel(limit);
      this.clusterRequests = new Counter({ name: `${PREFIX}requests_by_cluster_total`, help: `Requests by cluster and status class; clusters beyond the first ${limit} seen are counted as "other".`, labelNames: ['cluster', 'code'], registers });
    }
  }

  tunnelRetried(): void {
    this.retries.inc();
  }

  tunnelKeptAfterCancel(): void {
    this.keptAfterCancel.inc();
  }

  requestStarted(kind: RequestKind): void {
    this.inFlight.add(KIND_INDEX[kind], 1);
  }

  requestFinished(kind: RequestKind, method: string, status: number, seconds: number, firstByteSeconds?: number, cluster?: string): void {
    const k = KIND_INDEX[kind];
    this.inFlight.add(k, -1);
    const code = codeIndex(status);
    this.requests.add(requestsIndex(code, method, k));
    if (this.clusterRequests !== undefined && cluster !== undefined) this.clusterRequests.inc({ cluster: this.clusterLabel!.valueFor(cluster), code: CODES.values[code]! });
    this.duration.observe(k, seconds);
    if (firstByteSeconds !== undefined) this.firstByteSeconds.observe(k, firstByteSeconds);
  }

  /** A request rejected before routing (bad path): counted, never in flight. */
  requestRejected(method: string, status: number): void {
    this.requests.add(requestsIndex(codeIndex(status), method, KIND_INDEX.invalid));
  }

  dialed(report: DialReport): void {
    this.dials.inc({ outcome: report.outcome });
    this.dialSeconds.observe(report.connectSeconds);
    if (report.tlsSeconds !== undefined) this.tlsSeconds.observe(report.tlsSeconds);
  }

  upgradeOpened(): void {
    this.upgradedSessions.inc();
  }

  upgradeClosed(): void {
    this.upgradedSessions.dec();
  }

  tlsReloaded(source: TlsSource, ok: boolean): void {
    this.tlsReloads.inc({ source, outcome: ok ? 'success' : 'failure' });
  }

  tlsCertificateInUse(source: TlsSource, notAfterSeconds: number): void {
    this.tlsNotAfter.set({ source }, notAfterSeconds);
  }

  /** A Status the proxy answered with, instead of the managed cluster's answer. */
  proxyError(err: ProxyError): void {
    this.proxyErrors.inc({ code: err.code, status: String(err.statusCode) });
  }

  /** The cluster view that clusters_without_agent reads at each scrape. */
  countClustersWithoutAgent(count: () => number): void {
    this.clustersWithoutAgent = count;
  }

  logLinesDropped(lines: number): void {
    this.logDropped.inc(lines);
  }

  tunnelOpened(): void {
    this.tunnelsOpen.inc();
  }

  tunnelClosed(): void {
    this.tunnelsOpen.dec();
  }

  proxyConnections(open: number): void {
    this.proxyConnectionsOpen.set(open);
  }

  /** Successful dials so far; tests use it to check tunnel reuse. */
  async successfulDials(): Promise<number> {
    const m = await this.dials.get();
    return m.values.find((v) => v.labels.outcome === 'success')?.value ?? 0;
  }
}

/** Index into CODES: 0 for a request whose client left before any status, 1-5 for 1xx-5xx. */
function codeIndex(status: number): number {
  if (status === 0) return 0;
  return status >= 100 && status < 600 ? Math.floor(status / 100) : CODES.values.length - 1;
}

/** Index into requests_total's grid of code x method x kind (GridCounter's order). */
function requestsIndex(code: number, method: string, kind: number): number {
  return (code * METHODS.values.length + (METHOD_INDEX.get(method) ?? OTHER_METHOD)) * KINDS.values.length + kind;
}
