import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface Issued {
  cert: Buffer;
  key: Buffer;
  certFile: string;
  keyFile: string;
}

/** A new CA in `dir` (for rotation tests that move trust to another CA). */
export function issueCa(dir: string, name: string): Issued {
  const keyFile = path.join(dir, `${name}.key`);
  const certFile = path.join(dir, `${name}.crt`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '30', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], { stdio: 'ignore' });
  return { cert: readFileSync(certFile), key: readFileSync(keyFile), certFile, keyFile };
}

/** A leaf certificate with a fresh key, signed by `ca`. */
export function issueLeaf(dir: string, name: string, ca: { certFile: string; keyFile: string }, usage: 'serverAuth' | 'clientAuth', san = ''): Issued {
  const keyFile = path.join(dir, `${name}.key`);
  const certFile = path.join(dir, `${name}.crt`);
  const tmp = mkdtempSync(path.join(dir, 'csr-'));
  try {
    const ext = path.join(tmp, 'ext');
    writeFileSync(ext, ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${usage}`, ...(san ? [`subjectAltName=${san}`] : [])].join('\n'));
    const csr = path.join(tmp, 'csr');
    execFileSync('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', csr, '-subj', `/CN=${name}`], { stdio: 'ignore' });
    execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial', '-days', '30', '-extfile', ext, '-out', certFile], { stdio: 'ignore' });
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { cert: readFileSync(certFile), key: readFileSync(keyFile), certFile, keyFile };
}
