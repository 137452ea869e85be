/**
 * Side-by-side measurement of two ways to speak ANP's gRPC frontend (`/ProxyService/Proxy`, one
 * bidirectional stream of `Packet` per tunnel) from Node 24:
 *
 *   A  @grpc/grpc-js 1.14 (`Client.makeBidiStreamRequest`, retries off) + @bufbuild/protobuf wire codec
 *   B  node:http2 with hand-made gRPC framing                         + the same wire codec
 *
 * Both sit under one identical tunnel layer (`Tunnel`, a Duplex: DIAL_REQ -> DIAL_RSP -> DATA <-> DATA ->
 * CLOSE_REQ -> CLOSE_RSP -> end of stream), so the numbers differ only by transport and framing.
 *
 * It starts, on 127.0.0.1 only: a TCP echo server (its own Node process, so its CPU is not counted), a real
 * ANP v0.34.0 proxy-server (default gRPC mode, mTLS, --proxy-strategies=destHost) and one proxy-agent
 * (--agent-identifiers=host=127.0.0.1). Then, alternating A and B, 3 repetitions:
 *   1. open+close 1,000 tunnels, 50 concurrent, on ONE HTTP/2 connection;
 *   2. bulk echo of 64 MiB through one tunnel (sha256 checked), write backpressure honoured;
 *   2w. the same with 1 MiB stream and connection receive windows (both libs);
 *   3. 100 concurrent tunnels each echoing 1 KiB, 200 times.
 * plus a slow-reader check (read backpressure: pause/resume) and a count of client TCP connections.
 *
 * Run:  cd bench/grpc-library && npm install && ../../node_modules/.bin/node --expose-gc measure.ts
 *       (its own package.json: @grpc/grpc-js is not a dependency of the project)
 * Env:  REPS (3), TUNNELS (1000), CONC (50), BULK_MIB (64), CHUNK_KIB (32), RR_TUNNELS (100), RR_ROUNDS (200);
 *       SCEN=1,2,2w,3 (subset), CHECK_LIBS=AB (libs for the error/slow-reader checks, '' for none), DEBUG=1 (progress)
 * Writes results.json next to this file and prints a Markdown table; ANP logs and certs go to ./run/.
 * Node CPU is process.cpuUsage() (all threads of this process); ANP CPU is proxy-server + agent from /proc.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync, existsSync, openSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Duplex, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

const HERE = import.meta.dirname;
const MAIN = path.resolve(HERE, '../..');
const BIN = path.join(MAIN, '.cache/anp/v0.34.0');
const NODE = process.execPath;
const RUN = path.join(HERE, 'run');
const envInt = (k: string, d: number): number => (process.env[k] ? Number(process.env[k]) : d);
const REPS = envInt('REPS', 3);
const TUNNELS = envInt('TUNNELS', 1000);
const CONC = envInt('CONC', 50);
const BULK = envInt('BULK_MIB', 64) * 1024 * 1024;
const CHUNK = envInt('CHUNK_KIB', 32) * 1024;
const RR_TUNNELS = envInt('RR_TUNNELS', 100);
const RR_ROUNDS = envInt('RR_ROUNDS', 200);
const RR_SIZE = 1024;
const METHOD = '/ProxyService/Proxy';
const MAX_MSG = 4 * 1024 * 1024; // what the proxy-server accepts; we accept the same

// ---------------------------------------------------------------------------------------------------
// Protocol: konnectivity-client proto/client/client.proto (proto3, no package), hand-written wire codec.
// ---------------------------------------------------------------------------------------------------
const PT = { DIAL_REQ: 0, DIAL_RSP: 1, CLOSE_REQ: 2, CLOSE_RSP: 3, DATA: 4, DIAL_CLS: 5, DRAIN: 6 } as const;
const PT_NAME = Object.fromEntries(Object.entries(PT).map(([k, v]) => [v, k])) as Record<number, string>;

interface DialRequest { protocol: string; address: string; random: bigint }
interface DialResponse { error: string; connectID: bigint; random: bigint }
interface Data { connectID: bigint; error: string; data: Uint8Array }
interface CloseRequest { connectID: bigint }
interface CloseResponse { error: string; connectID: bigint }
interface CloseDial { random: bigint }
interface Packet {
  type: number;
  dialRequest?: DialRequest;
  dialResponse?: DialResponse;
  data?: Data;
  closeRequest?: CloseRequest;
  closeResponse?: CloseResponse;
  closeDial?: CloseDial;
  drain?: Record<string, never>;
}

const LD = WireType.LengthDelimited;
const VI = WireType.Varint;
const writer = new BinaryWriter(); // reused: finish() copies out and resets, the buffer keeps its capacity
const GRPC_PREFIX = new Uint8Array(5);

/** Encodes a Packet; with `grpcPrefix`, leaves room for and fills in the 5-byte gRPC message prefix. */
function encodePacket(p: Packet, grpcPrefix = false): Uint8Array {
  const w = writer;
  if (grpcPrefix) w.raw(GRPC_PREFIX);
  if (p.type !== 0) w.tag(1, VI).int32(p.type); // proto3: DIAL_REQ (0) is not written
  if (p.dialRequest) {
    const m = p.dialRequest;
    w.tag(2, LD).fork();
    if (m.protocol) w.tag(1, LD).string(m.protocol);
    if (m.address) w.tag(2, LD).string(m.address);
    if (m.random !== 0n) w.tag(3, VI).int64(m.random);
    w.join();
  } else if (p.dialResponse) {
    const m = p.dialResponse;
    w.tag(3, LD).fork();
    if (m.error) w.tag(1, LD).string(m.error);
    if (m.connectID !== 0n) w.tag(2, VI).int64(m.connectID);
    if (m.random !== 0n) w.tag(3, VI).int64(m.random);
    w.join();
  } else if (p.data) {
    const m = p.data;
    w.tag(4, LD).fork();
    if (m.connectID !== 0n) w.tag(1, VI).int64(m.connectID);
    if (m.error) w.tag(2, LD).string(m.error);
    if (m.data.length) w.tag(3, LD).bytes(m.data);
    w.join();
  } else if (p.closeRequest) {
    w.tag(5, LD).fork();
    if (p.closeRequest.connectID !== 0n) w.tag(1, VI).int64(p.closeRequest.connectID);
    w.join();
  } else if (p.closeResponse) {
    const m = p.closeResponse;
    w.tag(6, LD).fork();
    if (m.error) w.tag(1, LD).string(m.error);
    if (m.connectID !== 0n) w.tag(2, VI).int64(m.connectID);
    w.join();
  } else if (p.closeDial) {
    w.tag(7, LD).fork();
    if (p.closeDial.random !== 0n) w.tag(1, VI).int64(p.closeDial.random);
    w.join();
  } else if (p.drain) {
    w.tag(8, LD).fork().join();
  }
  const out = w.finish();
  if (grpcPrefix) {
    out[0] = 0; // not compressed
    new DataView(out.buffer, out.byteOffset, 5).setUint32(1, out.length - 5); // big-endian
  }
  return out;
}

const i64 = (r: BinaryReader): bigint => BigInt(r.int64()); // never a JS number: ids exceed 2^53
/** Reads the fields of one sub-message of `len` bytes; `field` returns false for fields it does not know. */
function sub(r: BinaryReader, field: (no: number, wt: WireType) => boolean): void {
  const len = r.uint32(); // read the length first: `r.pos + r.uint32()` would take pos before the varint
  const end = r.pos + len;
  if (end > r.len) throw new Error('truncated sub-message');
  while (r.pos < end) {
    const [no, wt] = r.tag();
    if (!field(no, wt)) r.skip(wt, no);
  }
  if (r.pos !== end) throw new Error('sub-message overrun');
}

function decodePacket(buf: Uint8Array): Packet {
  const r = new BinaryReader(buf);
  const p: Packet = { type: PT.DIAL_REQ }; // a missing `type` means DIAL_REQ (0)
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1 && wt === VI) p.type = r.int32();
    else if (no === 2 && wt === LD) {
      const m: DialRequest = { protocol: '', address: '', random: 0n };
      sub(r, (n, t) => (n === 1 && t === LD ? ((m.protocol = r.string()), true) : n === 2 && t === LD ? ((m.address = r.string()), true) : n === 3 && t === VI ? ((m.random = i64(r)), true) : false));
      p.dialRequest = m;
    } else if (no === 3 && wt === LD) {
      const m: DialResponse = { error: '', connectID: 0n, random: 0n };
      sub(r, (n, t) => (n === 1 && t === LD ? ((m.error = r.string()), true) : n === 2 && t === VI ? ((m.connectID = i64(r)), true) : n === 3 && t === VI ? ((m.random = i64(r)), true) : false));
      p.dialResponse = m;
    } else if (no === 4 && wt === LD) {
      const m: Data = { connectID: 0n, error: '', data: EMPTY };
      sub(r, (n, t) => (n === 1 && t === VI ? ((m.connectID = i64(r)), true) : n === 2 && t === LD ? ((m.error = r.string()), true) : n === 3 && t === LD ? ((m.data = r.bytes()), true) : false));
      p.data = m;
    } else if (no === 5 && wt === LD) {
      const m: CloseRequest = { connectID: 0n };
      sub(r, (n, t) => (n === 1 && t === VI ? ((m.connectID = i64(r)), true) : false));
      p.closeRequest = m;
    } else if (no === 6 && wt === LD) {
      const m: CloseResponse = { error: '', connectID: 0n };
      sub(r, (n, t) => (n === 1 && t === LD ? ((m.error = r.string()), true) : n === 2 && t === VI ? ((m.connectID = i64(r)), true) : false));
      p.closeResponse = m;
    } else if (no === 7 && wt === LD) {
      const m: CloseDial = { random: 0n };
      sub(r, (n, t) => (n === 1 && t === VI ? ((m.random = i64(r)), true) : false));
      p.closeDial = m;
    } else if (no === 8 && wt === LD) {
      sub(r, () => false);
      p.drain = {};
    } else r.skip(wt, no);
  }
  return p;
}
const EMPTY = new Uint8Array(0);

function selfTestCodec(): void {
  const big = (1n << 62n) + 12345n; // > 2^53: would be corrupted by a JS number
  const samples: Packet[] = [
    { type: PT.DIAL_REQ, dialRequest: { protocol: 'tcp', address: '127.0.0.1:1', random: big } },
    { type: PT.DIAL_RSP, dialResponse: { error: 'x', connectID: big, random: big + 1n } },
    { type: PT.DATA, data: { connectID: big, error: '', data: new TextEncoder().encode('hello') } },
    { type: PT.CLOSE_REQ, closeRequest: { connectID: big } },
    { type: PT.CLOSE_RSP, closeResponse: { error: '', connectID: 7n } },
    { type: PT.DIAL_CLS, closeDial: { random: big } },
    { type: PT.DRAIN, drain: {} },
  ];
  for (const s of samples) {
    const d = decodePacket(encodePacket(s));
    const norm = (x: unknown): string => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
    if (norm(d) !== norm(s)) throw new Error(`codec round trip: ${norm(s)} != ${norm(d)}`);
  }
  const framed = encodePacket(samples[2]!, true);
  if (framed[0] !== 0 || Buffer.from(framed).readUInt32BE(1) !== framed.length - 5) throw new Error('gRPC prefix');
  // DIAL_REQ encodes without field 1 at all: first byte is field 2's tag (0x12).
  if (encodePacket(samples[0]!)[0] !== 0x12) throw new Error('DIAL_REQ should omit type');
}

// ---------------------------------------------------------------------------------------------------
// Transport layer: one PacketStream per tunnel; A and B implement the same small interface.
// ---------------------------------------------------------------------------------------------------
interface PacketStream {
  onPacket: (p: Packet) => void;
  /** Once, when the stream is completely over: null for gRPC status OK. */
  onDone: (err: Error | null) => void;
  send(p: Packet): boolean;
  onceDrain(cb: () => void): void;
  pause(): void;
  resume(): void;
  end(): void;
  cancel(): void;
  /** What the library's writable side holds (A: messages, B: bytes). */
  writableLength(): number;
}

interface Transport {
  name: string;
  ready(): Promise<void>;
  open(): PacketStream;
  close(): Promise<void>;
}

interface Tls { ca: Buffer; cert: Buffer; key: Buffer }
interface WindowOpts { window?: number } // stream and connection receive window (bytes), undefined = library default

// ---- A: @grpc/grpc-js ----
class GrpcJsTransport implements Transport {
  name = 'A grpc-js';
  client: grpc.Client;
  constructor(port: number, tls: Tls, w: WindowOpts) {
    const options: grpc.ChannelOptions = {
      'grpc.enable_retries': 0,
      'grpc.use_local_subchannel_pool': 1, // our own connection, not shared with other Client objects
      'grpc.max_receive_message_length': MAX_MSG,
      'grpc.max_send_message_length': MAX_MSG,
    };
    if (w.window) options['grpc-node.flow_control_window'] = w.window;
    this.client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(tls.ca, tls.key, tls.cert), options);
  }
  ready(): Promise<void> {
    return new Promise((res, rej) => this.client.waitForReady(Date.now() + 10_000, (e) => (e ? rej(e) : res())));
  }
  open(): PacketStream {
    const call = this.client.makeBidiStreamRequest<Packet, Packet>(
      METHOD,
      (p) => { const u = encodePacket(p); return Buffer.from(u.buffer, u.byteOffset, u.byteLength); },
      (b) => decodePacket(b),
    );
    let done = false;
    const ps: PacketStream = {
      onPacket: () => {},
      onDone: () => {},
      send: (p) => call.write(p),
      onceDrain: (cb) => call.once('drain', cb),
      pause: () => call.pause(),
      resume: () => call.resume(),
      end: () => call.end(),
      cancel: () => call.cancel(),
      writableLength: () => call.writableLength,
    };
    const finish = (e: Error | null): void => { if (!done) { done = true; ps.onDone(e); } };
    call.on('data', (p: Packet) => ps.onPacket(p));
    call.on('status', (s: grpc.StatusObject) => finish(s.code === grpc.status.OK ? null : new Error(`grpc status ${s.code}: ${s.details}`)));
    call.on('error', (e: Error) => finish(e)); // grpc-js emits 'error' for every non-OK status; unhandled it would crash
    return ps;
  }
  async close(): Promise<void> { this.client.close(); }
}

// ---- B: node:http2 with hand-made gRPC framing ----
/** Splits a byte stream into gRPC messages (5-byte prefix: flag, big-endian length). */
class Deframer {
  private chunks: Buffer[] = [];
  private len = 0;
  private need = -1;
  push(c: Buffer, out: (m: Buffer) => void): void {
    this.chunks.push(c);
    this.len += c.length;
    for (;;) {
      if (this.need < 0) {
        if (this.len < 5) return;
        const h = this.take(5);
        if (h[0] !== 0) throw new Error('compressed gRPC message (not negotiated)');
        this.need = h.readUInt32BE(1);
        if (this.need > MAX_MSG) throw new Error(`gRPC message of ${this.need} bytes`);
      }
      if (this.len < this.need) return;
      const m = this.take(this.need);
      this.need = -1;
      out(m);
    }
  }
  private take(n: number): Buffer {
    this.len -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}

class H2Transport implements Transport {
  name = 'B node:http2';
  session: http2.ClientHttp2Session;
  authority: string;
  goaway = false;
  constructor(port: number, tls: Tls, w: WindowOpts) {
    this.authority = `127.0.0.1:${port}`;
    const settings: http2.Settings = {};
    if (w.window) settings.initialWindowSize = w.window;
    this.session = http2.connect(`https://${this.authority}`, { ca: tls.ca, cert: tls.cert, key: tls.key, ALPNProtocols: ['h2'], settings, maxSessionMemory: 64 });
    if (w.window) this.session.once('connect', () => this.session.setLocalWindowSize(w.window!));
    this.session.on('error', () => {}); // streams report their own errors; a session error also closes them
    this.session.on('goaway', () => { this.goaway = true; }); // new session.request() would throw ERR_HTTP2_GOAWAY_SESSION
  }
  async ready(): Promise<void> {
    if (!this.session.connecting) return;
    await once(this.session, 'connect');
    if (this.session.alpnProtocol !== 'h2') throw new Error(`ALPN ${this.session.alpnProtocol}`);
  }
  open(): PacketStream {
    const s = this.session.request({
      ':method': 'POST', ':scheme': 'https', ':authority': this.authority, ':path': METHOD,
      'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'grpc-measure-h2/0',
    });
    const def = new Deframer();
    let grpcStatus: string | undefined;
    let grpcMessage = '';
    let httpErr: Error | null = null;
    let done = false;
    const ps: PacketStream = {
      onPacket: () => {},
      onDone: () => {},
      send: (p) => s.write(encodePacket(p, true)),
      onceDrain: (cb) => s.once('drain', cb),
      pause: () => s.pause(),
      resume: () => s.resume(),
      end: () => s.end(),
      cancel: () => s.close(http2.constants.NGHTTP2_CANCEL),
      writableLength: () => s.writableLength,
    };
    const finish = (e: Error | null): void => { if (!done) { done = true; ps.onDone(e); } };
    s.on('response', (h) => {
      const ct = String(h['content-type'] ?? '');
      if (h[':status'] !== 200 || !ct.startsWith('application/grpc')) httpErr = new Error(`HTTP ${h[':status']} ${ct}`);
      if (h['grpc-status'] !== undefined) { grpcStatus = String(h['grpc-status']); grpcMessage = String(h['grpc-message'] ?? ''); } // trailers-only
    });
    s.on('data', (c: Buffer) => {
      try { def.push(c, (m) => ps.onPacket(decodePacket(m))); } catch (e) { s.close(http2.constants.NGHTTP2_PROTOCOL_ERROR); finish(e as Error); }
    });
    s.on('trailers', (t) => { grpcStatus = String(t['grpc-status']); grpcMessage = decodeURIComponent(String(t['grpc-message'] ?? '')); });
    s.on('error', (e) => finish(e));
    s.on('close', () => {
      if (httpErr) finish(httpErr);
      else if (grpcStatus === '0') finish(null);
      else if (grpcStatus !== undefined) finish(new Error(`grpc status ${grpcStatus}: ${grpcMessage}`));
      else finish(new Error(`stream closed without grpc-status (RST code ${s.rstCode})`));
    });
    return ps;
  }
  async close(): Promise<void> {
    if (this.session.closed || this.session.destroyed) return;
    const closed = once(this.session, 'close');
    this.session.close();
    await closed;
  }
}

// ---------------------------------------------------------------------------------------------------
// Tunnel: identical on top of either transport.
// ---------------------------------------------------------------------------------------------------
function random63(): bigint {
  for (;;) {
    const r = randomBytes(8).readBigUInt64BE() & 0x7fff_ffff_ffff_ffffn;
    if (r !== 0n) return r;
  }
}

class Tunnel extends Duplex {
  connectID = 0n;
  sendFalse = 0; // times the library's write() returned false
  maxLibWritable = 0; // peak of the library's writable buffer (A messages, B bytes)
  private ps: PacketStream;
  private closeRsp: (() => void) | undefined;
  private gotCloseRsp = false;
  private libPaused = false;
  private streamDone: Promise<Error | null>;
  private dialWait: { random: bigint; res: () => void; rej: (e: Error) => void } | undefined;

  private constructor(ps: PacketStream) {
    super({ readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024, allowHalfOpen: true, decodeStrings: false });
    this.ps = ps;
    this.streamDone = new Promise((res) => {
      ps.onDone = (e) => {
        res(e);
        this.dialWait?.rej(e ?? new Error('stream ended before DIAL_RSP'));
        if (!this.gotCloseRsp) this.push(null);
        this.closeRsp?.();
      };
    });
    ps.onPacket = (p) => this.packet(p);
  }

  static async dial(t: Transport, address: string, timeoutMs = 10_000): Promise<Tunnel> {
    const tun = new Tunnel(t.open());
    const random = random63();
    const dialed = new Promise<void>((res, rej) => { tun.dialWait = { random, res, rej }; });
    tun.ps.send({ type: PT.DIAL_REQ, dialRequest: { protocol: 'tcp', address, random } });
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([dialed, new Promise((_r, rej) => { timer = setTimeout(() => rej(new Error('dial timeout')), timeoutMs); })]);
    } catch (e) {
      // ANP leaves the stream open after a failed dial: end it ourselves (DIAL_CLS on timeout).
      if ((e as Error).message === 'dial timeout') tun.ps.send({ type: PT.DIAL_CLS, closeDial: { random } });
      tun.ps.end();
      throw e;
    } finally {
      clearTimeout(timer);
      tun.dialWait = undefined;
    }
    return tun;
  }

  private packet(p: Packet): void {
    switch (p.type) {
      case PT.DIAL_RSP: {
        const r = p.dialResponse;
        const w = this.dialWait;
        if (!r || !w || r.random !== w.random) return; // not ours
        if (r.error) w.rej(new Error(`dial failed: ${r.error}`));
        else if (r.connectID === 0n) w.rej(new Error('DIAL_RSP without connectID'));
        else { this.connectID = r.connectID; w.res(); }
        return;
      }
      case PT.DATA: {
        const d = p.data;
        if (!d || d.connectID !== this.connectID || this.gotCloseRsp) return;
        if (d.data.length && !this.push(d.data)) { this.libPaused = true; this.ps.pause(); } // read backpressure
        return;
      }
      case PT.CLOSE_RSP:
        this.gotCloseRsp = true;
        this.push(null);
        this.closeRsp?.();
        return;
      default:
        return; // DIAL_CLS / DRAIN / CLOSE_REQ: not expected by a frontend client here
    }
  }

  override _read(): void {
    if (this.libPaused) { this.libPaused = false; this.ps.resume(); }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    const ok = this.ps.send({ type: PT.DATA, data: { connectID: this.connectID, error: '', data: chunk } });
    const wl = this.ps.writableLength();
    if (wl > this.maxLibWritable) this.maxLibWritable = wl;
    if (ok) cb();
    else { this.sendFalse++; this.ps.onceDrain(() => cb()); } // write backpressure
  }

  /** CLOSE_REQ, wait for CLOSE_RSP, then end our side and wait for the stream's status. */
  async closeTunnel(timeoutMs = 10_000): Promise<void> {
    if (!this.gotCloseRsp) {
      const got = new Promise<void>((res) => { this.closeRsp = res; });
      this.ps.send({ type: PT.CLOSE_REQ, closeRequest: { connectID: this.connectID } });
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([got, new Promise((res) => { timer = setTimeout(res, timeoutMs); })]);
      clearTimeout(timer);
      if (!this.gotCloseRsp) throw new Error('no CLOSE_RSP');
    }
    this.ps.end();
    const e = await this.streamDone;
    if (e) throw e;
    if (this.readableLength > 0) this.resume();
  }
}

// ---------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------
const children: ChildProcess[] = [];
function startProc(name: string, cmd: string, args: string[]): ChildProcess {
  const log = openSync(path.join(RUN, `${name}.log`), 'w');
  const p = spawn(cmd, args, { stdio: ['ignore', log, log] });
  children.push(p);
  p.on('exit', (code, sig) => { if (!stopping) console.error(`!! ${name} exited code=${code} sig=${sig}`); });
  return p;
}
let stopping = false;
async function stopAll(): Promise<void> {
  stopping = true;
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 3000);
      await once(c, 'exit').catch(() => {});
      clearTimeout(t);
    }
  }
}
process.on('exit', () => { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); });
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => { void stopAll().then(() => process.exit(130)); });

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const p = (s.address() as net.AddressInfo).port;
  s.close();
  await once(s, 'close');
  return p;
}

async function waitHttp200(url: string, proc: ChildProcess, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (proc.exitCode !== null) throw new Error(`${url}: process exited`);
    try { if ((await fetch(url)).status === 200) return; } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`${url} not ready`);
}

/** CPU ms (user+system) a process has used so far, from /proc. */
function procCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}
const cpuMs = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;

function clientConnections(port: number): number {
  const out = execFileSync('ss', ['-Htn', 'state', 'established', `( dport = :${port} )`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim()).length;
}

// ---------------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------------
interface Env { frontendPort: number; echoAddr: string; tls: Tls; anpPids: number[] }
type Make = (w: WindowOpts) => Transport;
type Row = Record<string, number | string>;

function anpCpu(env: Env): number { return env.anpPids.reduce((a, p) => a + procCpuMs(p), 0); }
function gc(): void { (globalThis as { gc?: () => void }).gc?.(); }

async function withTransport<T>(make: Make, w: WindowOpts, env: Env, fn: (t: Transport) => Promise<T>): Promise<T & { conns: number }> {
  const t = make(w);
  if (process.env.DEBUG) console.log('withTransport: ready?', t.name);
  await t.ready();
  if (process.env.DEBUG) console.log('withTransport: ready', t.name);
  try {
    const r = await fn(t);
    return { ...r, conns: clientConnections(env.frontendPort) };
  } finally {
    await t.close();
  }
}

async function measure<T extends object>(env: Env, body: () => Promise<T>): Promise<T & { wallMs: number; cpuMs: number; anpCpuMs: number }> {
  gc();
  const a0 = anpCpu(env);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await body();
  const wallMs = performance.now() - t0;
  const cpu = cpuMs(process.cpuUsage(c0));
  return { ...r, wallMs, cpuMs: cpu, anpCpuMs: anpCpu(env) - a0 };
}

async function openClose(make: Make, env: Env): Promise<Row> {
  return withTransport(make, {}, env, async (t) => {
    for (let i = 0; i < 20; i++) await (await Tunnel.dial(t, env.echoAddr)).closeTunnel(); // warm-up
    let next = 0;
    let maxLive = 0;
    let live = 0;
    const m = await measure(env, async () => {
      await Promise.all(Array.from({ length: CONC }, async () => {
        while (next++ < TUNNELS) {
          const tun = await Tunnel.dial(t, env.echoAddr);
          live++;
          if (live > maxLive) maxLive = live;
          await tun.closeTunnel();
          live--;
        }
      }));
      return {};
    });
    return { wallMs: m.wallMs, cpuMsPerTunnel: m.cpuMs / TUNNELS, anpCpuMsPerTunnel: m.anpCpuMs / TUNNELS, tunnelsPerS: TUNNELS / (m.wallMs / 1000), maxLive };
  });
}

const BULK_DATA = randomBytes(BULK);
const BULK_SHA = createHash('sha256').update(BULK_DATA).digest('hex');

async function bulk(make: Make, env: Env, w: WindowOpts): Promise<Row> {
  return withTransport(make, w, env, async (t) => {
    { // warm-up: 1 MiB
      const tun = await Tunnel.dial(t, env.echoAddr);
      let got = 0;
      const done = new Promise<void>((res) => tun.on('data', (c: Buffer) => { got += c.length; if (got >= 1 << 20) res(); }));
      for (let o = 0; o < 1 << 20; o += CHUNK) if (!tun.write(BULK_DATA.subarray(o, o + CHUNK))) await once(tun, 'drain');
      await done;
      await tun.closeTunnel();
    }
    const tun = await Tunnel.dial(t, env.echoAddr);
    const h = createHash('sha256');
    let got = 0;
    let readChunks = 0;
    let tunWriteFalse = 0;
    const m = await measure(env, async () => {
      const done = new Promise<void>((res) => tun.on('data', (c: Buffer) => { h.update(c); got += c.length; readChunks++; if (got >= BULK) res(); }));
      for (let o = 0; o < BULK; o += CHUNK) {
        if (!tun.write(BULK_DATA.subarray(o, o + CHUNK))) { tunWriteFalse++; await once(tun, 'drain'); }
      }
      await done;
      return {};
    });
    const ok = h.digest('hex') === BULK_SHA && got === BULK;
    await tun.closeTunnel();
    if (!ok) throw new Error(`bulk sha256 mismatch (${got} bytes)`);
    const mib = BULK / (1024 * 1024);
    return {
      MBps: BULK / 1e6 / (m.wallMs / 1000), cpuMsPerMiB: m.cpuMs / mib, anpCpuMsPerMiB: m.anpCpuMs / mib, wallMs: m.wallMs,
      sha256ok: 'yes', avgReadChunk: Math.round(got / readChunks), libWriteFalse: tun.sendFalse, tunWriteFalse, maxLibWritable: tun.maxLibWritable,
    };
  });
}

async function reqResp(make: Make, env: Env): Promise<Row> {
  return withTransport(make, {}, env, async (t) => {
    const tuns = await Promise.all(Array.from({ length: RR_TUNNELS }, () => Tunnel.dial(t, env.echoAddr)));
    if (process.env.DEBUG) console.log('reqResp: dialed', tuns.length);
    const payload = randomBytes(RR_SIZE);
    const prog: number[] = new Array(tuns.length).fill(0);
    const dbg = process.env.DEBUG ? setInterval(() => console.log('reqResp progress', prog.join(','), tuns.map((x) => x.readableLength + '/' + x.readableFlowing).slice(0, 5)), 2000) : undefined;
    const run = async (rounds: number): Promise<void> => {
      await Promise.all(tuns.map(async (tun, ti) => {
        let got = 0;
        let want = 0;
        let wake: (() => void) | undefined;
        const onData = (c: Buffer): void => { got += c.length; if (got >= want) wake?.(); };
        tun.on('data', onData);
        tun.resume(); // after an explicit pause(), adding a 'data' listener does not resume
        for (let i = 0; i < rounds; i++) {
          want += RR_SIZE;
          const p = new Promise<void>((res) => { wake = res; });
          tun.write(payload);
          if (got < want) await p;
          prog[ti]!++;
        }
        tun.off('data', onData);
        tun.pause();
      }));
    };
    await run(10); // warm-up
    const m = await measure(env, async () => { await run(RR_ROUNDS); return {}; });
    const n = RR_TUNNELS * RR_ROUNDS;
    if (process.env.DEBUG) console.log('reqResp: measured');
    await Promise.all(tuns.map((x) => x.closeTunnel()));
    clearInterval(dbg);
    return { reqPerS: n / (m.wallMs / 1000), cpuUsPerRT: (m.cpuMs * 1000) / n, anpCpuUsPerRT: (m.anpCpuMs * 1000) / n, wallMs: m.wallMs };
  });
}

/** Read backpressure: a slow consumer must not make the client buffer without bound, and bytes must survive pause/resume. */
async function slowReader(make: Make, env: Env): Promise<Row> {
  return withTransport(make, {}, env, async (t) => {
    const size = Math.min(8 * 1024 * 1024, BULK);
    const tun = await Tunnel.dial(t, env.echoAddr);
    if (process.env.DEBUG) console.log('slowReader: dialed', tun.connectID);
    const h = createHash('sha256');
    let got = 0;
    let maxBuffered = 0;
    let n = 0;
    const sink = new Writable({
      highWaterMark: 16 * 1024,
      write(c: Buffer, _e, cb) {
        h.update(c);
        got += c.length;
        maxBuffered = Math.max(maxBuffered, tun.readableLength);
        if (++n % 16 === 0) setTimeout(cb, 2); else setImmediate(cb);
        if (got >= size) tun.unpipe(sink);
      },
    });
    tun.pipe(sink);
    let sent = 0;
    const dbg = process.env.DEBUG ? setInterval(() => console.log('slowReader', { sent, got, rl: tun.readableLength, wl: tun.writableLength, flowing: tun.readableFlowing, st: (tun as any).libPaused }), 1000) : undefined;
    for (let o = 0; o < size; o += CHUNK) { if (!tun.write(BULK_DATA.subarray(o, o + CHUNK))) await once(tun, 'drain'); sent = o; }
    while (got < size) await sleep(10);
    clearInterval(dbg);
    const ok = h.digest('hex') === createHash('sha256').update(BULK_DATA.subarray(0, size)).digest('hex');
    await tun.closeTunnel();
    return { ok: ok ? 'yes' : 'NO', maxTunnelReadBuffered: maxBuffered, rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20) };
  });
}

// Unused in the measurement itself but exercised once: a dial to a closed port, and a dial to an unknown host.
async function errorPaths(make: Make, env: Env): Promise<Row> {
  return withTransport(make, {}, env, async (t) => {
    const e1 = await Tunnel.dial(t, '127.0.0.1:1').then(() => 'ok', (e: Error) => e.message);
    const e2 = await Tunnel.dial(t, '127.0.0.9:80').then(() => 'ok', (e: Error) => e.message);
    return { closedPort: e1, noAgent: e2 };
  });
}

// ---------------------------------------------------------------------------------------------------
function median(xs: number[]): number { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; }
const fmt = (x: number | string | undefined): string => (typeof x === 'number' ? (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(3)) : String(x));

async function main(): Promise<void> {
  selfTestCodec();
  for (const b of ['proxy-server', 'proxy-agent']) if (!existsSync(path.join(BIN, b))) throw new Error(`missing ${b}`);
  mkdirSync(RUN, { recursive: true });
  const certDir = path.join(RUN, 'certs');
  execFileSync('bash', [path.join(MAIN, 'certs/make-dev-certs.sh'), certDir], { stdio: 'ignore' });
  const cf = (n: string): string => path.join(certDir, n);
  const tls: Tls = { ca: readFileSync(cf('ca.crt')), cert: readFileSync(cf('user-client.crt')), key: readFileSync(cf('user-client.key')) };

  // echo target: a separate process so its CPU is not in the client's numbers
  const echo = startProc('echo', NODE, ['-e', "const s=require('net').createServer(c=>{c.on('error',()=>{});c.pipe(c)});s.listen(0,'127.0.0.1',()=>console.log(s.address().port))"]);
  let echoPort = 0;
  for (let i = 0; i < 100 && !echoPort; i++) { await sleep(50); echoPort = Number(readFileSync(path.join(RUN, 'echo.log'), 'utf8').trim()) || 0; }
  if (!echoPort) throw new Error('echo server did not start');
  void echo;

  const [frontendPort, agentPort, healthPort, adminPort, aHealth, aAdmin] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
  const server = startProc('proxy-server', path.join(BIN, 'proxy-server'), [
    '--server-bind-address=127.0.0.1', `--server-port=${frontendPort}`,
    `--server-cert=${cf('proxy-server.crt')}`, `--server-key=${cf('proxy-server.key')}`, `--server-ca-cert=${cf('ca.crt')}`,
    '--agent-bind-address=127.0.0.1', `--agent-port=${agentPort}`,
    `--cluster-cert=${cf('proxy-server.crt')}`, `--cluster-key=${cf('proxy-server.key')}`, `--cluster-ca-cert=${cf('ca.crt')}`,
    '--health-bind-address=127.0.0.1', `--health-port=${healthPort}`,
    '--admin-bind-address=127.0.0.1', `--admin-port=${adminPort}`,
    '--proxy-strategies=destHost', '--server-count=1', '--v=1',
  ]);
  await waitHttp200(`http://127.0.0.1:${healthPort}/healthz`, server);
  const agent = startProc('proxy-agent', path.join(BIN, 'proxy-agent'), [
    '--proxy-server-host=127.0.0.1', `--proxy-server-port=${agentPort}`,
    `--ca-cert=${cf('ca.crt')}`, `--agent-cert=${cf('proxy-agent.crt')}`, `--agent-key=${cf('proxy-agent.key')}`,
    '--agent-id=measure-agent', '--agent-identifiers=host=127.0.0.1',
    '--health-server-host=127.0.0.1', `--health-server-port=${aHealth}`,
    '--admin-bind-address=127.0.0.1', `--admin-server-port=${aAdmin}`, '--v=1',
  ]);
  await waitHttp200(`http://127.0.0.1:${aHealth}/readyz`, agent);
  await waitHttp200(`http://127.0.0.1:${healthPort}/readyz`, server); // an agent is in the destHost manager
  const env: Env = { frontendPort, echoAddr: `127.0.0.1:${echoPort}`, tls, anpPids: [server.pid!, agent.pid!] };
  console.log(`node ${process.version}, grpc-js ${JSON.parse(readFileSync(path.join(HERE, 'node_modules/@grpc/grpc-js/package.json'), 'utf8')).version}, frontend :${frontendPort}, echo ${env.echoAddr}, gc ${typeof (globalThis as { gc?: unknown }).gc === 'function'}`);

  const makers: Record<'A' | 'B', Make> = {
    A: (w) => new GrpcJsTransport(frontendPort, tls, w),
    B: (w) => new H2Transport(frontendPort, tls, w),
  };
  const scenarios: [string, (m: Make) => Promise<Row>][] = [
    ['1 open+close', (m) => openClose(m, env)],
    ['2 bulk 64KiB-win', (m) => bulk(m, env, {})],
    ['2w bulk 1MiB-win', (m) => bulk(m, env, { window: 1 << 20 })],
    ['3 req/resp', (m) => reqResp(m, env)],
  ];
  const checks: Record<string, Row> = {};
  for (const lib of (process.env.CHECK_LIBS ?? 'AB').split('') as ('A' | 'B')[]) {
    checks[`errors ${lib}`] = await errorPaths(makers[lib], env);
    console.log(lib, JSON.stringify(checks[`errors ${lib}`]));
    checks[`slowReader ${lib}`] = await slowReader(makers[lib], env);
    console.log(lib, JSON.stringify(checks[`slowReader ${lib}`]));
  }
  const raw: Record<string, Row[]> = {};
  for (let rep = 0; rep < REPS; rep++) {
    for (const [sname, fn] of scenarios) {
      if (process.env.SCEN && !process.env.SCEN.split(',').includes(sname.split(' ')[0]!)) continue;
      const order: ('A' | 'B')[] = rep % 2 === 0 ? ['A', 'B'] : ['B', 'A'];
      for (const lib of order) {
        const row = await fn(makers[lib]);
        row.load1 = os.loadavg()[0]!; // other work on this (2-CPU) machine at the time
        (raw[`${sname}|${lib}`] ??= []).push(row);
        console.log(`rep ${rep + 1} ${sname} ${lib}: ${Object.entries(row).map(([k, v]) => `${k}=${fmt(v)}`).join(' ')}`);
      }
    }
  }
  const med: Record<string, Row> = {};
  for (const [k, rows] of Object.entries(raw)) {
    const out: Row = {};
    for (const key of Object.keys(rows[0]!)) {
      const vals = rows.map((r) => r[key]);
      out[key] = typeof vals[0] === 'number' ? median(vals as number[]) : [...new Set(vals)].join(',');
    }
    med[k] = out;
  }
  writeFileSync(path.join(HERE, 'results.json'), JSON.stringify({ when: new Date().toISOString(), node: process.version, params: { REPS, TUNNELS, CONC, BULK, CHUNK, RR_TUNNELS, RR_ROUNDS }, checks, medians: med, raw }, null, 2));
  console.log('\n| scenario | lib | medians of ' + REPS + ' |\n|---|---|---|');
  for (const [k, row] of Object.entries(med)) {
    const [s, lib] = k.split('|');
    console.log(`| ${s} | ${lib} | ${Object.entries(row).map(([kk, v]) => `${kk}=${fmt(v)}`).join(' ')} |`);
  }
}

try {
  await main();
} finally {
  await stopAll();
}
