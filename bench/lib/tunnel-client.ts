import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { Agent } from 'undici';
import { createDialer } from '../../src/tunnel/create-dialer.ts';
import { openTunnel, type TunnelOptions } from '../../src/tunnel/open-tunnel.ts';

/** What the "limit" client needs to reach a service-proxy through ANP by itself. */
export interface DirectTunnelSpec {
  proxyHost: string;
  proxyPort: number;
  caFile: string;
  certFile: string;
  keyFile: string;
}

/**
 * The project's own CONNECT tunnels (mTLS to ANP, CONNECT, TLS to the service-proxy inside), as the
 * "limit" client uses them: it always speaks HTTP CONNECT, to the bench's http-connect proxy-server.
 */
function tunnelOptions(spec: DirectTunnelSpec): TunnelOptions {
  const proxyTls = tls.createSecureContext({ ca: readFileSync(spec.caFile), cert: readFileSync(spec.certFile), key: readFileSync(spec.keyFile) });
  const serviceProxyTls = tls.createSecureContext({ ca: readFileSync(spec.caFile) });
  return {
    dialer: createDialer({
      mode: 'http-connect',
      endpoint: { transport: 'tcp', host: spec.proxyHost, port: spec.proxyPort, servername: spec.proxyHost },
      proxyTls: () => proxyTls,
      connectTimeoutMs: 10_000,
      agentRetryAfterSeconds: 5,
      // gRPC only; the CONNECT dialer keeps nothing between dials.
      connections: 1,
      keepaliveIntervalMs: 0,
      stallTimeoutMs: 0,
    }),
    serviceProxyTls: () => serviceProxyTls,
    tlsHandshakeTimeoutMs: 10_000,
  };
}

/** One tunnel, for a WebSocket upgrade sent straight inside it. */
export function openTunnelSocket(spec: DirectTunnelSpec, host: string, port: number): Promise<tls.TLSSocket> {
  return openTunnel(tunnelOptions(spec), { host, port });
}

/**
 * An undici Agent whose connections are such tunnels: the client pools its tunnels itself, with no
 * user-server in between.
 */
export function directTunnelAgent(spec: DirectTunnelSpec, connections: number): Agent {
  const options = tunnelOptions(spec);
  return new Agent({
    connections,
    pipelining: 1,
    keepAliveTimeout: 120_000,
    keepAliveMaxTimeout: 120_000,
    bodyTimeout: 0,
    headersTimeout: 60_000,
    connect: (opts, cb) => {
      openTunnel(options, { host: opts.hostname, port: Number(opts.port) }).then(
        (socket) => cb(null, socket),
        (err: Error) => cb(err, null),
      );
    },
  });
}

/** The headers the service-proxy requires; the user-server adds the same ones for kube-apiserver paths. */
export const KUBE_TARGET_HEADERS = {
  'cluster-proxy-proto': 'https',
  'cluster-proxy-namespace': 'default',
  'cluster-proxy-service': 'kubernetes',
  'cluster-proxy-port': '443',
};
