import { Agent, type Dispatcher } from 'undici';
import type { Config } from '../config/config.ts';
import { openTunnel, type TunnelKind, type TunnelOptions } from '../tunnel/open-tunnel.ts';

export interface PoolLimits {
  /** Keep-alive tunnels per cluster for ordinary requests. */
  maxTunnelsPerCluster: number;
  /** Tunnels per cluster for long-running requests (watch, logs -f). */
  maxStreamsPerCluster: number;
  /** HTTP/2 streams per tunnel for long-running requests; 0 keeps them on HTTP/1.1, one tunnel each. */
  maxStreamsPerTunnel: number;
  /** Idle time after which a pooled tunnel is closed. */
  idleTimeoutMs: number;
  /** HTTP/2 PING interval on the long-running pool's tunnels; 0 disables. */
  pingIntervalMs: number;
  /** Distinct clusters with open pools; further clusters wait for an idle pool to go away. */
  maxClusters: number;
  /** Time to wait for the response headers once the request is sent; 0 disables. */
  headersTimeoutMs: number;
}

export function poolLimitsFrom(config: Pick<Config, 'limits' | 'timeouts'>): PoolLimits {
  return {
    maxTunnelsPerCluster: config.limits.maxTunnelsPerCluster,
    maxStreamsPerCluster: config.limits.maxStreamsPerCluster,
    maxStreamsPerTunnel: config.limits.maxStreamsPerTunnel,
    idleTimeoutMs: config.timeouts.idleTunnelMs,
    pingIntervalMs: config.timeouts.tunnelPingMs,
    maxClusters: config.limits.maxClusters,
    headersTimeoutMs: config.timeouts.responseHeadersMs,
  };
}

/**
 * Two undici Agents over the same tunnel opener. Requests to one cluster share an origin
 * (https://<target host>:<port>), so undici keeps one pool of keep-alive tunnels per cluster. Long-running
 * requests get their own pool: with HTTP/1.1 each one holds a tunnel for its whole life, and in a shared
 * pool a few hundred watches would starve every short request to that cluster.
 *
 * The long-running pool offers h2, which the Go service-proxy accepts, so that one tunnel carries many
 * watches: a watch then costs an HTTP/2 stream instead of two TLS sessions. HTTP/2 flow control is per
 * stream, so a client that stops reading stalls only its own stream. undici PINGs the tunnel and resets
 * it when a PING is still unanswered at the next, so quiet watches do not sit on a tunnel that died
 * silently (an agent that hangs, a dropped connection nobody closed).
 * Short requests stay on HTTP/1.1: over HTTP/2, large bodies cost about 40% more CPU per MiB
 * (bench/README.md, finding 9).
 */
export class TunnelPools {
  readonly short: Dispatcher;
  readonly streams: Dispatcher;

  constructor(tunnel: TunnelOptions, limits: PoolLimits) {
    const connector = (http2: boolean, kind: TunnelKind): Agent.Options['connect'] => (opts, cb) => {
      openTunnel(tunnel, { host: opts.hostname, port: Number(opts.port), http2, kind }).then(
        (socket) => cb(null, socket),
        (err: Error) => cb(err, null),
      );
    };
    const common = {
      keepAliveTimeout: limits.idleTimeoutMs,
      keepAliveMaxTimeout: limits.idleTimeoutMs,
      keepAliveTimeoutThreshold: 1_000,
      headersTimeout: limits.headersTimeoutMs,
      // Established streams have no timeout: a quiet watch or `logs -f` may stay silent for hours.
      bodyTimeout: 0,
      maxOrigins: limits.maxClusters,
      pipelining: 1,
    } satisfies Agent.Options;
    this.short = new Agent({ ...common, connect: connector(false, 'short'), allowH2: false, connections: limits.maxTunnelsPerCluster });
    const http2 = limits.maxStreamsPerTunnel > 0;
    this.streams = new Agent({
      ...common,
      connect: connector(http2, 'stream'),
      allowH2: http2,
      // undici takes the lower of this and the service-proxy's SETTINGS_MAX_CONCURRENT_STREAMS (Go: 250).
      ...(http2 ? { h2Options: { maxConcurrentStreams: limits.maxStreamsPerTunnel, pingInterval: limits.pingIntervalMs } } : {}),
      connections: limits.maxStreamsPerCluster,
    });
  }

  async close(): Promise<void> {
    await Promise.all([this.short.close(), this.streams.close()]);
  }

  async destroy(): Promise<void> {
    await Promise.all([this.short.destroy(), this.streams.destroy()]);
  }
}
