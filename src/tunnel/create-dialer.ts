import type tls from 'node:tls';
import type { Config } from '../config/config.ts';
import { ConnectDialer, type ProxyEndpoint } from './connect-dialer.ts';
import type { Dialer } from './dialer.ts';
import { GrpcDialer } from './grpc/grpc-dialer.ts';

export type ProxyMode = 'grpc' | 'http-connect';

export interface DialerSettings {
  /** ANP's frontend protocol: one proxy-server process speaks one of them (its `--mode`). */
  mode: ProxyMode;
  endpoint: ProxyEndpoint;
  proxyTls: () => tls.SecureContext | undefined;
  connectTimeoutMs: number;
  agentRetryAfterSeconds: number;
  /** gRPC only: HTTP/2 connections kept to the proxy-server. */
  connections: number;
  /** gRPC only: PING interval on connections that carry tunnels; 0 disables. */
  keepaliveIntervalMs: number;
  /** gRPC only: a tunnel left unread this long is aborted; 0 disables. */
  stallTimeoutMs: number;
  onConnections?: (open: number) => void;
}

/** The dialer settings a configuration names; `proxyTls` gives the current client certificate material. */
export function dialerSettingsFrom(config: Config, proxyTls: DialerSettings['proxyTls']): DialerSettings {
  return {
    mode: config.proxyMode,
    endpoint: config.proxy.transport === 'tcp'
      ? { transport: 'tcp', host: config.proxy.host, port: config.proxy.port, servername: config.proxy.servername }
      : { transport: 'uds', path: config.proxy.path },
    proxyTls,
    connectTimeoutMs: config.timeouts.connectMs,
    agentRetryAfterSeconds: config.agentRetryAfterSeconds,
    connections: config.grpc.connections,
    keepaliveIntervalMs: config.grpc.keepaliveIntervalMs,
    stallTimeoutMs: config.timeouts.clientStallMs,
  };
}

export function createDialer(s: DialerSettings): Dialer {
  if (s.mode === 'http-connect') {
    return new ConnectDialer({ endpoint: s.endpoint, proxyTls: s.proxyTls, connectTimeoutMs: s.connectTimeoutMs, agentRetryAfterSeconds: s.agentRetryAfterSeconds });
  }
  const options: ConstructorParameters<typeof GrpcDialer>[0] = {
    endpoint: s.endpoint,
    proxyTls: s.proxyTls,
    connections: s.connections,
    keepaliveIntervalMs: s.keepaliveIntervalMs,
    connectTimeoutMs: s.connectTimeoutMs,
    agentRetryAfterSeconds: s.agentRetryAfterSeconds,
    stallTimeoutMs: s.stallTimeoutMs,
  };
  if (s.onConnections !== undefined) options.onConnections = s.onConnections;
  return new GrpcDialer(options);
}
