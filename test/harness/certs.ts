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
