import type { Duplex } from 'node:stream';
import { ProxyError, type ProxyErrorCode, type ProxyErrorOptions } from '../errors/proxy-error.ts';

/** Where the agent is asked to dial: the service-proxy's hashed host name and port. */
export interface DialTarget {
  host: string;
  port: number;
}

/**
 * Opens byte streams to a managed cluster through the ANP proxy-server. Each implementation speaks one
 * of ANP's frontends (HTTP CONNECT over TCP or a Unix socket, or the gRPC `ProxyService/Proxy` stream)
 * and yields the same thing: a duplex byte stream that reaches `target` once the agent has dialled it.
 * The stream must never be half-closed: ANP tears the whole tunnel down on the client's end of stream.
 */
export interface Dialer {
  /** Resolves once the agent's dial succeeded; rejects with a DialError. */
  dial(target: DialTarget, signal?: AbortSignal): Promise<Duplex>;
  /** Closes what the dialer keeps between dials (the gRPC mode's connections); tunnels still open end. */
  close(): void;
  /**
   * When TLS to the service-proxy fails over a stream this dialer opened, says what ANP meant if the
   * dialer can tell: old ANP versions accept a tunnel before the agent dials and report a failed dial
   * inside it.
   */
  explainFailedHandshake?(carrier: Duplex): Promise<DialError | undefined>;
}

export type DialOutcome =
  | 'success'
  | 'agent_unavailable'
  | 'agent_dial_failed'
  | 'agent_dial_timeout'
  | 'proxy_unreachable'
  | 'proxy_tls_failed'
  | 'proxy_timeout'
  | 'proxy_protocol_error'
  | 'service_proxy_tls_failed'
  | 'service_proxy_tls_timeout'
  | 'aborted';

/** The outcome decides the code, so metrics and the client's Status always agree. */
const CODE_OF: Record<Exclude<DialOutcome, 'success'>, ProxyErrorCode> = {
  agent_unavailable: 'AGENT_UNAVAILABLE',
  agent_dial_failed: 'AGENT_DIAL_FAILED',
  agent_dial_timeout: 'AGENT_DIAL_TIMEOUT',
  proxy_unreachable: 'PROXY_UNREACHABLE',
  proxy_tls_failed: 'PROXY_TLS_FAILED',
  proxy_timeout: 'PROXY_CONNECT_TIMEOUT',
  proxy_protocol_error: 'PROXY_PROTOCOL_ERROR',
  service_proxy_tls_failed: 'SERVICE_PROXY_TLS_FAILED',
  service_proxy_tls_timeout: 'SERVICE_PROXY_TLS_TIMEOUT',
  // Nobody is left to read the answer; the code only shows in logs.
  aborted: 'UPSTREAM_FAILED',
};

/** A tunnel that could not be opened, with the outcome counted in tunnel_dials_total. */
export class DialError extends ProxyError {
  readonly outcome: Exclude<DialOutcome, 'success'>;

  constructor(outcome: Exclude<DialOutcome, 'success'>, message: string, options: ProxyErrorOptions = {}) {
    super(CODE_OF[outcome], message, options);
    this.outcome = outcome;
  }
}

export function isDialError(err: unknown): err is DialError {
  return err instanceof DialError;
}

export function authorityOf(target: DialTarget): string {
  return target.host.includes(':') ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
}

/**
 * ANP's words for a failed dial, the same behind both frontends: no agent registered for the host
 * ("No agent available"; "No backend available" before v0.0.32), or the agent's own dial timing out
 * (Go's "i/o timeout", v0.36's "timed out waiting for backend dial"). Anything else is the agent's dial
 * error (refused, no such host, ...).
 */
export function agentErrorKind(text: string): 'no-agent' | 'dial-timeout' | undefined {
  if (/no agent available|no backend available|no tunnels available/i.test(text)) return 'no-agent';
  if (/i\/o timeout|deadline exceeded|timed out/i.test(text)) return 'dial-timeout';
  return undefined;
}

export function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || code === 'CERT_HAS_EXPIRED' ||
    code.startsWith('UNABLE_TO_') || code.includes('CERT') || (err as { library?: string }).library === 'SSL routines';
}

/**
 * A TLS alert saying the server speaks no protocol we offered: most often the proxy-server runs the other
 * frontend mode than the one configured (gRPC offers only h2, http-connect only http/1.1).
 */
export function isNoCommonProtocol(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL' || /no application protocol/i.test(err.message);
}
