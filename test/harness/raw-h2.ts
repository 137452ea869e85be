import { once } from 'node:events';
import tls from 'node:tls';

/**
 * One HTTP/2 request with a header list written by hand: Node's client refuses to send what the tests
 * need to send (two Authorization fields, two :authority, a Host beside :authority). HPACK literals
 * without Huffman or indexing; names and values under 127 bytes. The answer is read as frames: the DATA
 * payload (a Status body is JSON) and any RST_STREAM code.
 */
export async function rawH2Request(port: number, ca: Buffer, headers: readonly (readonly [string, string])[]): Promise<{ body: string; reset: number | undefined }> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'] });
  socket.on('error', () => {});
  await once(socket, 'secureConnect');
  const block = Buffer.concat(
    headers.map(([name, value]) => {
      if (name.length > 126 || value.length > 126) throw new Error('rawH2Request: keep names and values under 127 bytes');
      return Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name, 'latin1'), Buffer.from([value.length]), Buffer.from(value, 'latin1')]);
    }),
  );
  // SETTINGS (empty), then HEADERS on stream 1 with END_STREAM | END_HEADERS.
  socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(0x4, 0, 0), frame(0x1, 0x5, 1, block)]));
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    let body = '';
    const done = (reset: number | undefined): void => {
      socket.destroy();
      resolve({ body, reset });
    };
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const stream = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === 0x4 && (flags & 0x1) === 0) socket.write(frame(0x4, 0x1, 0));
        if (stream !== 1) continue;
        if (type === 0x0) {
          body += payload.toString('utf8');
          if ((flags & 0x1) !== 0) return done(undefined);
        }
        if (type === 0x1 && (flags & 0x1) !== 0) return done(undefined);
        if (type === 0x3) return done(payload.readUInt32BE(0));
      }
    });
    socket.once('close', () => done(undefined));
  });
}

function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}
