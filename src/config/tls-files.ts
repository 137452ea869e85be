import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { Config } from './config.ts';

/**
 * TLS contexts are built once from the configured files (and again on rotation), never per tunnel:
 * building them per connection halved throughput (perf-notes.md).
 */
export function proxyServerContext(config: Config): tls.SecureContext | undefined {
  if (config.proxy.transport !== 'tcp') return undefined;
  return tls.createSecureContext({
    ca: readFileSync(config.proxy.caFile),
    cert: readFileSync(config.proxy.certFile),
    key: readFileSync(config.proxy.keyFile),
    minVersion: 'TLSv1.2',
  });
}

export function serviceProxyContext(config: Config): tls.SecureContext {
  return tls.createSecureContext({ ca: readFileSync(config.serviceProxyCaFile), minVersion: 'TLSv1.2' });
}

export function servingMaterial(config: Config): { cert: Buffer; key: Buffer } {
  return { cert: readFileSync(config.server.certFile), key: readFileSync(config.server.keyFile) };
}
