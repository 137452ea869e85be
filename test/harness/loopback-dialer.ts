import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dialer } from '../../src/tunnel/dialer.ts';

/** A dialer whose every tunnel is a plain TCP connection to `port` on loopback, where a test's own service-proxy stand-in answers. */
export function loopbackDialer(port: number): Dialer {
  return {
    dial: () =>
      new Promise<Duplex>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => resolve(s));
        s.once('error', reject);
      }),
    close: () => {},
  };
}
