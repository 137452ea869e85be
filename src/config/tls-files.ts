import { X509Certificate, createPrivateKey } from 'node:crypto';
import tls from 'node:tls';

/**
 * Checks and builds the TLS material the server uses from file contents. TLS contexts are built once per
 * load (at start and on rotation), never per tunnel: building them per connection halved throughput
 * (perf-notes.md). Every builder throws an Error saying what is wrong, so a bad rotation is refused and
 * the material in use stays.
 */
export interface Built<T> {
  value: T;
  /** Expiry of the certificate (the earliest one of a CA bundle), in Unix seconds. */
  notAfterSeconds: number;
}

export interface ServingMaterial {
  cert: Buffer;
  key: Buffer;
}

export function buildServing(cert: Buffer, key: Buffer): Built<ServingMaterial> {
  const leaf = checkPair(cert, key);
  // The server builds its own context from these; building one here proves OpenSSL accepts them.
  tls.createSecureContext({ cert, key });
  return { value: { cert, key }, notAfterSeconds: notAfter(leaf) };
}

export function buildProxyClient(ca: Buffer, cert: Buffer, key: Buffer): Built<tls.SecureContext> {
  checkCaBundle(ca);
  const leaf = checkPair(cert, key);
  return { value: tls.createSecureContext({ ca, cert, key, minVersion: 'TLSv1.2' }), notAfterSeconds: notAfter(leaf) };
}

export function buildServiceProxyTrust(ca: Buffer): Built<tls.SecureContext> {
  const certs = checkCaBundle(ca);
  return { value: tls.createSecureContext({ ca, minVersion: 'TLSv1.2' }), notAfterSeconds: Math.min(...certs.map(notAfter)) };
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** OpenSSL silently skips what is not a certificate in a CA list, so an empty or garbled bundle is refused here. */
function checkCaBundle(ca: Buffer): X509Certificate[] {
  const blocks = ca.toString('latin1').match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new Error('no PEM certificate found in the CA file');
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new Error(`CA certificate #${i + 1} cannot be parsed: ${(err as Error).message}`);
    }
  });
}

function checkPair(cert: Buffer, key: Buffer): X509Certificate {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`the certificate cannot be parsed: ${(err as Error).message}`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new Error(`the private key cannot be parsed: ${(err as Error).message}`);
  }
  // Files read in the middle of a rotation may be one old and one new.
  if (!leaf.checkPrivateKey(privateKey)) throw new Error('the private key does not match the certificate');
  return leaf;
}

function notAfter(cert: X509Certificate): number {
  return Math.floor(new Date(cert.validTo).getTime() / 1000);
}
