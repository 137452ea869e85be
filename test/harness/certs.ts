import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SETTINGS } from '../../src/config/settings.ts';

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
 * Settings (flag names, without dashes) for a user-server started on its own: loopback, ephemeral ports,
 * the dev certificates, and an ANP socket that does not exist (the server starts without ANP; requests
 * would get 502 unless a test hands it a dialer). The proxy mode is ANP_MODE's when set (the per-mode
 * vitest projects), else the server's default.
 */
export function standaloneServerSettings(certs: CertSet, dir: string): Record<string, string> {
  return {
    ...(process.env.ANP_MODE !== undefined ? { 'proxy-mode': process.env.ANP_MODE } : {}),
    'server-address': '127.0.0.1',
    'server-port': '0',
    'health-address': '127.0.0.1',
    'health-port': '0',
    'server-cert': certs.file('user-server.crt'),
    'server-key': certs.file('user-server.key'),
    'service-proxy-ca-cert': certs.file('ca.crt'),
    'proxy-server-uds': path.join(dir, 'absent.sock'),
  };
}

/** The same as the CLI's environment variables. */
export function standaloneServerEnv(certs: CertSet, dir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [flag, value] of Object.entries(standaloneServerSettings(certs, dir))) env[SETTINGS.find((s) => s.flag === flag)!.env] = value;
  return env;
}
