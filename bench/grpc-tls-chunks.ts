// Micro-benchmark: CPU per MiB of a TLS client whose transport is a JS Duplex (as over a gRPC tunnel),
// by the size of the chunks pushed into it. Usage: node bench/grpc-tls-chunks.ts <cert> <key> [MiB]
import { fork } from 'node:child_process';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { startTlsSource } from './lib/tls-source.ts';

const [cert, key, mibArg] = process.argv.slice(2);
const MIB = Number(mibArg ?? 64);
if (process.env.CHILD === '1') {
  process.send!(await startTlsSource(cert!, key!, MIB, 64 * 1024));
} else {
  const child = fork(process.argv[1]!, process.argv.slice(2), { env: { ...process.env, CHILD: '1' } });
  const port = await new Promise<number>((r) => child.once('message', (m) => r(m as number)));
  for (const size of (process.env.SIZES ?? "4096,16384,65536,4096,16384,65536").split(",").map(Number)) {
    const raw = net.connect(port, '127.0.0.1');
    await new Promise((r) => raw.once('connect', r));
    // A duplex that re-chunks what the raw socket reads into pieces of `size` bytes.
    let pending: Buffer[] = []; let pendingBytes = 0;
    const d = new Duplex({
      read() { if (raw.isPaused()) raw.resume(); },
      write(chunk, _e, cb) { raw.write(chunk, cb); },
      final(cb) { raw.end(); cb(); },
    });
    if (size !== 0) raw.on('data', (c: Buffer) => {
      pending.push(c); pendingBytes += c.length;
      if (pendingBytes < size) return;
      const all = Buffer.concat(pending, pendingBytes);
      let off = 0;
      for (; off + size <= all.length; off += size) if (!d.push(all.subarray(off, off + size))) raw.pause();
      pending = off < all.length ? [all.subarray(off)] : []; pendingBytes = all.length - off;
    });
    // The remainder (handshake records, the tail) goes out once the I/O round is over.
    if (size !== 0) raw.on('data', () => setImmediate(() => { if (pendingBytes) { const b = Buffer.concat(pending, pendingBytes); pending = []; pendingBytes = 0; d.push(b); } }));
    if (size !== 0) raw.on('end', () => { if (pendingBytes) d.push(Buffer.concat(pending)); d.push(null); });
    // size 0: TLS straight on the native socket, for comparison.
    const t = tls.connect({ socket: size === 0 ? raw : d, rejectUnauthorized: false, servername: 'localhost' });
    await new Promise((r) => t.once('secureConnect', r));
    const c0 = process.cpuUsage(); const w0 = performance.now();
    let got = 0;
    t.on('data', (b: Buffer) => { got += b.length; });
    t.write('go');
    await new Promise((r) => t.once('end', r));
    const c = process.cpuUsage(c0); const ms = performance.now() - w0;
    console.log(`chunk ${size}: ${(got / 1048576).toFixed(0)} MiB, ${((c.user + c.system) / 1000 / (got / 1048576)).toFixed(2)} ms CPU/MiB, ${(got / 1048576 / (ms / 1000)).toFixed(0)} MiB/s`);
    t.destroy(); raw.destroy();
  }
  child.kill();
}
