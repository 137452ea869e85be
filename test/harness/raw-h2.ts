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

export { frame as h2Frame };

export const H2 = {
  frame: { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 },
  flag: { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 },
  code: { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 },
} as const;

/** An HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first` holds the bits above the prefix. */
function hpackInt(value: number, prefixBits: number, first: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

/**
 * One HPACK header field as a literal with a literal name, no Huffman: `indexed` adds it to the dynamic
 * table (§6.2.1), otherwise it is sent without indexing (§6.2.2). Any length and any bytes.
 */
export function hpackLiteral(name: string, value: string | Buffer, opts: { indexed?: boolean } = {}): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
  return Buffer.concat([Buffer.from([opts.indexed ? 0x40 : 0x00]), hpackInt(n.length, 7, 0), n, hpackInt(v.length, 7, 0), v]);
}

/** A reference to entry `index` of the static (1-61) or dynamic (62 on) table (§6.1). */
export function hpackIndexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

export interface H2Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/**
 * A byte-level HTTP/2 client that sends whatever frames a test writes, as an attacker would, and records
 * every frame the server sends. The server's SETTINGS are acknowledged unless `ackSettings` is false.
 */
export class RawH2Connection {
  readonly frames: H2Frame[] = [];
  readonly closed: Promise<void>;
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  readonly socket: tls.TLSSocket;

  private constructor(socket: tls.TLSSocket, ackSettings: boolean) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      while (this.buf.length >= 9) {
        const len = this.buf.readUIntBE(0, 3);
        if (this.buf.length < 9 + len) break;
        const f: H2Frame = { type: this.buf[3]!, flags: this.buf[4]!, stream: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) };
        this.buf = this.buf.subarray(9 + len);
        this.frames.push(f);
        if (ackSettings && f.type === H2.frame.SETTINGS && (f.flags & H2.flag.ACK) === 0) socket.write(frame(H2.frame.SETTINGS, H2.flag.ACK, 0));
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Connects, sends the preface with `settings` (SETTINGS payload) and waits for the server's SETTINGS. */
  static async connect(port: number, ca: Buffer, opts: { settings?: Buffer; ackSettings?: boolean } = {}): Promise<RawH2Connection> {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'] });
    await once(socket, 'secureConnect');
    if (socket.alpnProtocol !== 'h2') throw new Error(`ALPN chose ${String(socket.alpnProtocol)}`);
    const c = new RawH2Connection(socket, opts.ackSettings ?? true);
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(H2.frame.SETTINGS, 0, 0, opts.settings)]));
    await c.until((fs) => fs.some((f) => f.type === H2.frame.SETTINGS && (f.flags & H2.flag.ACK) === 0));
    return c;
  }

  write(...frames: Buffer[]): boolean {
    return this.socket.write(Buffer.concat(frames));
  }

  /** Resolves once `ok` holds for the frames received, or with false once the connection has closed without it. */
  async until(ok: (frames: H2Frame[]) => boolean): Promise<boolean> {
    for (;;) {
      if (ok(this.frames)) return true;
      if (this.socket.destroyed) return false;
      await Promise.race([new Promise<void>((resolve) => this.waiters.push(resolve)), this.closed]);
    }
  }

  resets(): { stream: number; code: number }[] {
    return this.frames.filter((f) => f.type === H2.frame.RST_STREAM).map((f) => ({ stream: f.stream, code: f.payload.readUInt32BE(0) }));
  }

  goAway(): { lastStream: number; code: number; debug: string } | undefined {
    const f = this.frames.find((x) => x.type === H2.frame.GOAWAY);
    return f === undefined ? undefined : { lastStream: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4), debug: f.payload.subarray(8).toString('latin1') };
  }

  /** DATA received on `stream`, as text (a Status body is JSON). */
  body(stream: number): string {
    return Buffer.concat(this.frames.filter((f) => f.type === H2.frame.DATA && f.stream === stream).map((f) => f.payload)).toString('utf8');
  }

  close(): void {
    this.socket.destroy();
  }
}
