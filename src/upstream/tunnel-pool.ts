import { Agent, type Dispatcher } from 'undici';
import { openTunnel, type TunnelOptions } from '../tunnel/anp-tunnel.ts';

export interface PoolLimits {
  /** Keep-alive tunnels per cluster for ordinary requests. */
  maxTunnelsPerCluster: number;
  /** Tunnels per cluster for long-running requests (watch, logs -f); each holds one while it streams. */
  maxStreamsPerCluster: number;
  /** Idle time after which a pooled tunnel is closed. */
  idleTimeoutMs: number;
  /** Distinct clusters with open pools; further clusters wait for an idle pool to go away. */
  maxClusters: number;
  /** Time to wait for the response headers once the request is sent; 0 disables. */
  headersTimeoutMs: number;
}

/**
 * Two undici Agents over the same tunnel opener. Requests to one cluster share an origin
 * (https://<target host>:<port>), so undici keeps one pool of keep-alive tunnels per cluster. Long-running
 * requests get their own pool: with HTTP/1.1 each one holds a tunnel for its whole life, and in a shared
 * pool a few hundred watches would starve every short request to that cluster.
 */
export class TunnelPools {
  readonly short: Dispatcher;
  readonly streams: Dispatcher;

  constructor(tunnel: TunnelOptions, limits: PoolLimits) {
    const connect: Agent.Options['connect'] = (opts, cb) => {
      openTunnel(tunnel, { host: opts.hostname, port: Number(opts.port) }).then(
        (socket) => cb(null, socket),
        (err: Error) => cb(err, null),
      );
    };
    const common = {
      connect,
      keepAliveTimeout: limits.idleTimeoutMs,
      keepAliveMaxTimeout: limits.idleTimeoutMs,
      keepAliveTimeoutThreshold: 1_000,
      headersTimeout: limits.headersTimeoutMs,
      // Established streams have no timeout: a quiet watch or `logs -f` may stay silent for hours.
      bodyTimeout: 0,
      maxOrigins: limits.maxClusters,
      pipelining: 1,
    } satisfies Agent.Options;
    this.short = new Agent({ ...common, connections: limits.maxTunnelsPerCluster });
    this.streams = new Agent({ ...common, connections: limits.maxStreamsPerCluster });
  }

  async close(): Promise<void> {
    await Promise.all([this.short.close(), this.streams.close()]);
  }

  async destroy(): Promise<void> {
    await Promise.all([this.short.destroy(), this.streams.destroy()]);
  }
}
