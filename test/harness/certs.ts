import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface CertSet {
  dir: string;
  file(name: string): string;
  read(name: string): Buffer;
}

/** Makes a fresh set of certificates with certs/make-dev-certs.sh (keys live only in the temp folder). */
export function makeCerts(dir: string): CertSet {
  execFileSync('bash', [path.join(ROOT, 'certs/make-dev-certs.sh'), dir], { stdio: 'ignore' });
  return {
    dir,
    file: (name) => path.join(dir, name),
    read: (name) => readFileSync(path.join(dir, name)),
  };
}

/**
 * Environment for a user-server CLI started on its own: loopback, ephemeral ports, the dev certificates,
 * and an ANP socket that does not exist (the server starts without ANP; requests would get 502). The
 * proxy mode is ANP_MODE's when set (the per-mode vitest projects), else the server's default.
 */
export function standaloneServerEnv(certs: CertSet, dir: string): Record<string, string> {
  return {
    ...(process.env.ANP_MODE !== undefined ? { CLUSTER_PROXY_PROXY_MODE: process.env.ANP_MODE } : {}),
    CLUSTER_PROXY_SERVER_ADDRESS: '127.0.0.1',
    CLUSTER_PROXY_SERVER_PORT: '0',
    CLUSTER_PROXY_HEALTH_ADDRESS: '127.0.0.1',
    CLUSTER_PROXY_HEALTH_PORT: '0',
    CLUSTER_PROXY_SERVER_CERT: certs.file('user-server.crt'),
    CLUSTER_PROXY_SERVER_KEY: certs.file('user-server.key'),
    CLUSTER_PROXY_SERVICE_PROXY_CA_CERT: certs.file('ca.crt'),
    CLUSTER_PROXY_PROXY_SERVER_UDS: path.join(dir, 'absent.sock'),
  };
}
