// Micro-benchmark of the gRPC dialer's receive path: CPU per MiB in this process for TLS over GrpcTunnel,
// against a stand-in proxy-server (a child process) that sends what its TLS target writes in 4 KiB DATA
// packets, one write each, as the ANP agent does. Usage:
//   node bench/grpc-recv.ts <cert.pem> <key.pem> [MiB per tunnel=64] [tunnels=2] [rounds=3]
import { fork } from 'node:child_process';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { FrameDecoder, frame } from '../src/tunnel/grpc/frames.ts';
import { PacketType, decodePacket, encodeData, type Packet } from '../src/tunnel/grpc/packet.ts';
import { startTlsSource } from './lib/tls-source.ts';

const [cert, key, mibArg, tunnelsArg, roundsArg] = process.argv.slice(2);
const MIB = Number(mibArg ?? 64);
const TUNNELS = Number(tunnelsArg ?? 2);
const ROUNDS = Number(roundsArg ?? 3);
const sock = path.join(os.tmpdir(), `grpc-recv-${process.env.CHILD === '1' ? process.ppid : process.pid}.sock`);

if (process.env.CHILD === '1') {
  const port = await startTlsSource(cert!, key!, MIB, 16 * 1024);
  let nextID = 1n;
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    const send = (b: Uint8Array): boolean => !stream.destroyed && stream.write(frame(b));
    let remote: net.Socket | undefined;
    let id = 0n;
    const dec = new FrameDecoder(4 << 20);
    stream.on('data', (chunk: Buffer) => dec.push(chunk, (m) => {
      const p = decodePacket(m);
      if (p.type === PacketType.DIAL_REQ) {
        const random = (p as Extract<Packet, { type: 0 }>).random;
        remote = net.connect(port, '127.0.0.1', () => {
          id = nextID++;
          send(new BinaryWriter().tag(1, WireType.Varint).int32(1).tag(3, WireType.LengthDelimited).fork().tag(2, WireType.Varint).int64(id).tag(3, WireType.Varint).int64(random).join().finish());
        });
        // One HTTP/2 DATA frame per packet, as grpc-go sends them: the next packet is written once the
        // previous one has left (Node would otherwise pack several into one 16 KiB frame).
        const queue: Buffer[] = [];
        let writing = false;
        const next = (): void => {
          const m = queue.shift();
          if (m === undefined || stream.destroyed) { writing = false; if (remote!.isPaused()) remote!.resume(); return; }
          writing = true;
          stream.write(m, next);
        };
        remote.on('data', (d: Buffer) => {
          for (let off = 0; off < d.length; off += 4096) queue.push(frame(encodeData(id, d.subarray(off, off + 4096))));
          if (queue.length > 64) remote!.pause();
          if (!writing) next();
        });
        remote.on('close', () => queue.push(frame(new BinaryWriter().tag(1, WireType.Varint).int32(3).tag(6, WireType.LengthDelimited).fork().tag(2, WireType.Varint).int64(id).join().finish())) && (writing || next()));
        remote.on('error', () => {});
      } else if (p.type === PacketType.DATA) remote?.write((p as Extract<Packet, { type: 4 }>).data);
      else if (p.type === PacketType.CLOSE_REQ) remote?.destroy();
    }));
    stream.on('end', () => { remote?.destroy(); if (!stream.destroyed) stream.end(); });
    stream.on('error', () => remote?.destroy());
  });
  server.listen(sock, () => process.send!('ready'));
} else {
  const child = fork(process.argv[1]!, process.argv.slice(2), { env: { ...process.env, CHILD: '1' } });
  await new Promise((r) => child.once('message', r));
  // GRPC_DIALER=<path of a grpc-dialer.ts> measures another revision (a copy of HEAD's tree, say).
  const { GrpcDialer } = await import(process.env.GRPC_DIALER ?? '../src/tunnel/grpc/grpc-dialer.ts') as typeof import('../src/tunnel/grpc/grpc-dialer.ts');
  const dialer = new GrpcDialer({ endpoint: { transport: 'uds', path: sock }, proxyTls: () => undefined, connections: 1, keepaliveIntervalMs: 0, connectTimeoutMs: 5000, agentRetryAfterSeconds: 1, stallTimeoutMs: 0 });
  const one = async (): Promise<number> => {
    const tunnel = await dialer.dial({ host: 'target', port: 1 });
    const t = tls.connect({ socket: tunnel, rejectUnauthorized: false, servername: 'localhost' });
    await new Promise((r) => t.once('secureConnect', r));
    let got = 0;
    t.on('data', (b: Buffer) => { got += b.length; });
    t.write('go');
    await new Promise((r) => t.once('end', r));
    t.destroy();
    return got;
  };
  await one(); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    const got = (await Promise.all(Array.from({ length: TUNNELS }, one))).reduce((a, b) => a + b, 0);
    const c = process.cpuUsage(c0);
    const mib = got / 1048576;
    console.log(`${mib.toFixed(0)} MiB over ${TUNNELS} tunnels: ${((c.user + c.system) / 1000 / mib).toFixed(2)} ms CPU/MiB, ${(mib / ((performance.now() - w0) / 1000)).toFixed(0)} MiB/s`);
  }
  dialer.close();
  child.kill();
}
