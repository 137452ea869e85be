import { readFileSync } from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';

/**
 * A TLS server on loopback for the receive micro-benchmarks: once a client sends its first bytes, it writes
 * `mib` MiB in `chunkBytes` pieces (with backpressure) and ends. Resolves with its port.
 */
export async function startTlsSource(certFile: string, keyFile: string, mib: number, chunkBytes: number): Promise<number> {
  const server = tls.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) }, (s) => {
    const buf = Buffer.alloc(chunkBytes, 7);
    let left = (mib * 1024 * 1024) / buf.length;
    const pump = (): void => {
      while (left > 0) {
        left--;
        if (!s.write(buf)) return;
      }
      s.end();
    };
    s.on('drain', pump);
    s.on('error', () => {});
    s.once('data', pump);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}
