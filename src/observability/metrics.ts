import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DialReport } from '../tunnel/anp-tunnel.ts';

const PREFIX = 'cluster_proxy_user_server_';

/** Buckets from 1 ms to ~2 min: covers pooled requests, cold tunnels and ANP's 5 s dial timeout. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

export type RequestKind = 'kube' | 'service' | 'upgrade' | 'invalid';

/**
 * All metrics, behind typed helpers so that labels stay bounded: code class (2xx...), method (a fixed
 * set), request kind, dial outcome. No per-cluster labels.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'code' | 'method' | 'kind'>;
  private readonly duration: Histogram<'kind'>;
  private readonly inFlight: Gauge<'kind'>;
  private readonly dials: Counter<'outcome'>;
  private readonly dialSeconds: Histogram;
  private readonly tlsSeconds: Histogram;
  private readonly firstByteSeconds: Histogram<'kind'>;
  private readonly tunnelsOpen: Gauge;
  private readonly upgradedSessions: Gauge;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    const registers = [this.registry];
    this.requests = new Counter({ name: `${PREFIX}requests_total`, help: 'Requests by status class, method and kind.', labelNames: ['code', 'method', 'kind'], registers });
    this.duration = new Histogram({ name: `${PREFIX}request_duration_seconds`, help: 'Time from request to the end of the response.', labelNames: ['kind'], buckets: LATENCY_BUCKETS, registers });
    this.inFlight = new Gauge({ name: `${PREFIX}requests_in_flight`, help: 'Requests being served, upgraded sessions included.', labelNames: ['kind'], registers });
    this.dials = new Counter({ name: `${PREFIX}tunnel_dials_total`, help: 'CONNECT tunnels opened through ANP, by outcome.', labelNames: ['outcome'], registers });
    this.dialSeconds = new Histogram({ name: `${PREFIX}tunnel_connect_seconds`, help: 'Time to the CONNECT reply (includes the agent dial).', buckets: LATENCY_BUCKETS, registers });
    this.tlsSeconds = new Histogram({ name: `${PREFIX}tunnel_tls_seconds`, help: 'TLS handshake with the service-proxy inside the tunnel.', buckets: LATENCY_BUCKETS, registers });
    this.firstByteSeconds = new Histogram({ name: `${PREFIX}time_to_first_byte_seconds`, help: 'Time from dispatch to the upstream response headers.', labelNames: ['kind'], buckets: LATENCY_BUCKETS, registers });
    this.upgradedSessions = new Gauge({ name: `${PREFIX}upgraded_sessions`, help: 'Upgraded sessions (exec, attach, port-forward) past their 101, still open.', registers });
    this.tunnelsOpen = new Gauge({ name: `${PREFIX}tunnels_open`, help: 'Tunnels currently open (pooled and upgraded).', registers });
  }

  requestStarted(kind: RequestKind): void {
    this.inFlight.inc({ kind });
  }

  requestFinished(kind: RequestKind, method: string, status: number, seconds: number, firstByteSeconds?: number): void {
    this.inFlight.dec({ kind });
    this.requests.inc({ code: codeClass(status), method: boundedMethod(method), kind });
    this.duration.observe({ kind }, seconds);
    if (firstByteSeconds !== undefined) this.firstByteSeconds.observe({ kind }, firstByteSeconds);
  }

  /** A request rejected before routing (bad path): counted, never in flight. */
  requestRejected(method: string, status: number): void {
    this.requests.inc({ code: codeClass(status), method: boundedMethod(method), kind: 'invalid' });
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

  tunnelOpened(): void {
    this.tunnelsOpen.inc();
  }

  tunnelClosed(): void {
    this.tunnelsOpen.dec();
  }

  /** Successful CONNECTs so far; tests and benchmarks use it to check tunnel reuse. */
  async successfulDials(): Promise<number> {
    const m = await this.dials.get();
    return m.values.find((v) => v.labels.outcome === 'success')?.value ?? 0;
  }
}

function codeClass(status: number): string {
  return status === 0 ? 'aborted' : `${Math.floor(status / 100)}xx`;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

function boundedMethod(method: string): string {
  return METHODS.has(method) ? method : 'OTHER';
}
