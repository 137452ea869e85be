import http2 from 'node:http2';
import net from 'node:net';
import { FrameDecoder, frame } from '../../src/tunnel/grpc/frames.ts';
import { PacketType, decodePacket, encodeData, type Packet } from '../../src/tunnel/grpc/packet.ts';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

/**
 * A stand-in for ANP's gRPC frontend, for fast unit tests of the dialer's connection handling: plain
 * HTTP/2 (h2c) on a Unix socket, as ANP's UDS frontend, serving `/ProxyService/Proxy`. A DIAL_REQ for an
 * address in `targets` connects to that local TCP port; `silent` addresses are never answered; others get
 * "No agent available". The real proxy-server is what the integration tests use.
 */
export interface FakeGrpcProxy {
  path: string;
  /** Every packet received, per HTTP/2 session (by session number, from 0). */
  received: { session: number; packet: Packet }[];
  sessions: http2.ServerHttp2Session[];
  /** Streams open now. */
  openStreams(): number;
  close(): Promise<void>;
}

export async function startFakeGrpcProxy(opts: { path: string; targets: Record<string, number>; silent?: string[]; noAgentOnSessions?: number[] }): Promise<FakeGrpcProxy> {
  const received: FakeGrpcProxy['received'] = [];
  const sessions: http2.ServerHttp2Session[] = [];
  let open = 0;
  let nextConnectID = 1n;
  const server = http2.createServer();
  server.on('session', (s) => sessions.push(s));
  server.on('stream', (stream, headers) => {
    const sessionNo = sessions.indexOf(stream.session as http2.ServerHttp2Session);
    if (headers[':path'] !== '/ProxyService/Proxy') {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12' }, { endStream: true });
      return;
    }
    open++;
    stream.once('close', () => open--);
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
    const send = (bytes: Uint8Array): void => {
      if (!stream.destroyed) stream.write(frame(bytes));
    };
    let remote: net.Socket | undefined;
    let connectID = 0n;
    const decoder = new FrameDecoder(4 << 20);
    stream.on('data', (chunk: Buffer) =>
      decoder.push(chunk, (m) => {
        const packet = decodePacket(m);
        received.push({ session: sessionNo, packet });
        if (packet.type === PacketType.DIAL_REQ) {
          const p = packet as Extract<Packet, { type: 0 }>;
          if (opts.silent?.includes(p.address)) return;
          const port = opts.targets[p.address];
          if (port === undefined || opts.noAgentOnSessions?.includes(sessionNo)) {
            send(dialResponse(p.random, 0n, 'No agent available'));
            return;
          }
          remote = net.connect(port, '127.0.0.1', () => {
            connectID = nextConnectID++;
            send(dialResponse(p.random, connectID, ''));
          });
          remote.on('data', (d: Buffer) => send(encodeData(connectID, d)));
          remote.on('close', () => send(closeResponse(connectID)));
          remote.on('error', () => {});
        } else if (packet.type === PacketType.DATA) {
          remote?.write((packet as Extract<Packet, { type: 4 }>).data);
        } else if (packet.type === PacketType.CLOSE_REQ) {
          remote?.destroy();
        }
      }),
    );
    // The client ended its side: the tunnel is over (ANP has no half-close); answer with OK trailers.
    stream.on('end', () => {
      remote?.destroy();
      if (!stream.destroyed) stream.end();
    });
    stream.on('error', () => remote?.destroy());
  });
  await new Promise<void>((resolve) => server.listen(opts.path, resolve));
  return {
    path: opts.path,
    received,
    sessions,
    openStreams: () => open,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function dialResponse(random: bigint, connectID: bigint, error: string): Uint8Array {
  const w = new BinaryWriter().tag(1, WireType.Varint).int32(PacketType.DIAL_RSP).tag(3, WireType.LengthDelimited).fork();
  if (error !== '') w.tag(1, WireType.LengthDelimited).string(error);
  if (connectID !== 0n) w.tag(2, WireType.Varint).int64(connectID);
  return w.tag(3, WireType.Varint).int64(random).join().finish();
}

function closeResponse(connectID: bigint): Uint8Array {
  return new BinaryWriter().tag(1, WireType.Varint).int32(PacketType.CLOSE_RSP).tag(6, WireType.LengthDelimited).fork().tag(2, WireType.Varint).int64(connectID).join().finish();
}
