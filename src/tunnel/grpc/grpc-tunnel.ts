import http2 from 'node:http2';
import { Duplex } from 'node:stream';
import { DialError, agentErrorKind, isTlsError, type DialTarget } from '../dialer.ts';
import { FrameDecoder, FrameError, frame, frameStart } from './frames.ts';
import { PacketType, decodePacket, encodeCloseRequest, encodeDataPrefix, encodeDialClose, encodeDialRequest, type Packet } from './packet.ts';

/** The server accepts messages up to 4 MiB; agents send at most 4 KiB of data per packet. */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Larger writes are cut into DATA packets of this size, well below the server's message limit. */
const MAX_DATA_BYTES = 256 * 1024;
/** After we end a stream (failed dial, close), the server normally ends it at once; past this it is reset. */
const END_GRACE_MS = 5_000;

export interface GrpcTunnelOptions {
  /** The `ProxyService/Proxy` stream this tunnel owns; one dial per stream, as the server requires. */
  stream: http2.ClientHttp2Stream;
  /** Names the proxy-server in messages. */
  proxyName: string;
  /**
   * A tunnel whose reader leaves its buffer full this long is aborted: the proxy-server sends to every
   * tunnel of an agent from one goroutine, so one unread stream stalls the whole cluster. 0 disables.
   */
  stallTimeoutMs: number;
  /** Bytes of received data kept for a slow reader before the stream is paused (and the stall clock starts). */
  readBufferBytes: number;
}

type State = 'new' | 'dialling' | 'open' | 'closed';

/**
 * A dial the proxy-server never saw: its stream was refused (RST_STREAM REFUSED_STREAM, which HTTP/2
 * guarantees was not processed), or its connection went away or never came up. It may be tried on
 * another connection.
 */
export class UnsentDial extends DialError {}

/**
 * One tunnel over one gRPC stream: DIAL_REQ, then DATA both ways as a byte stream (a Duplex, so TLS to the
 * service-proxy runs on it like on a socket), ended by CLOSE_REQ / CLOSE_RSP. There is no half-close in
 * this protocol: ending our side of the gRPC stream ends the tunnel, so `end()` on this Duplex sends
 * CLOSE_REQ and waits for the server's CLOSE_RSP, still delivering what arrives until then.
 */
export class GrpcTunnel extends Duplex {
  private readonly stream: http2.ClientHttp2Stream;
  private readonly proxyName: string;
  private readonly stallTimeoutMs: number;
  private readonly decoder = new FrameDecoder(MAX_MESSAGE_BYTES);
  private state: State = 'new';
  private connectID = 0n;
  private random = 0n;
  private stallTimer: NodeJS.Timeout | undefined;
  private dialDone: ((err?: DialError) => void) | undefined;
  private target: DialTarget | undefined;
  /** Made once, rather than a closure per received chunk. */
  private readonly onMessage = (message: Buffer): void => this.onPacket(decodePacket(message));

  constructor(opts: GrpcTunnelOptions) {
    // Half-open on purpose: after the server's CLOSE_RSP ended the readable side, the TLS layer above may
    // still write (its close_notify); those bytes are dropped rather than failing the socket.
    super({ allowHalfOpen: true, readableHighWaterMark: opts.readBufferBytes });
    this.stream = opts.stream;
    this.proxyName = opts.proxyName;
    this.stallTimeoutMs = opts.stallTimeoutMs;
    const stream = this.stream;
    stream.on('data', (chunk: Buffer) => this.onChunk(chunk));
    stream.on('response', (headers) => this.onResponseHeaders(headers));
    stream.on('trailers', (trailers) => this.onTrailers(trailers));
    stream.on('end', () => this.onStreamEnd());
    stream.on('error', (err: Error) => this.onStreamError(err));
    stream.on('close', () => this.onStreamClose());
  }

  /** The connection id the agent gave this tunnel; 0 until the dial succeeded. */
  get id(): bigint {
    return this.connectID;
  }

  /**
   * Sends DIAL_REQ and settles on DIAL_RSP. `random` identifies the dial in the server's map of pending
   * dials, which every client of the proxy-server shares. The returned promise never settles by itself
   * when the agent dies during the dial (the server never answers): the caller's timeout calls abandon().
   */
  dial(target: DialTarget, random: bigint): Promise<void> {
    this.target = target;
    this.random = random;
    this.state = 'dialling';
    return new Promise((resolve, reject) => {
      this.dialDone = (err) => {
        this.dialDone = undefined;
        if (err === undefined) resolve();
        else reject(err);
      };
      this.stream.write(frame(encodeDialRequest(`${target.host}:${target.port}`, random)));
    });
  }

  /** Gives up a dial still pending: DIAL_CLS tells the server to forget it, then the stream is ended. */
  abandon(err: DialError): void {
    if (this.state !== 'dialling') return;
    if (this.stream.writable) this.stream.write(frame(encodeDialClose(this.random)));
    this.failDial(err);
  }

  private failDial(err: DialError): void {
    this.state = 'closed';
    this.dialDone?.(err);
    this.endStream();
    this.destroy();
  }

  private onResponseHeaders(headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void {
    const status = headers[':status'];
    if (status !== 200) {
      this.protocolFailure(`the ANP proxy-server at ${this.proxyName} answered the gRPC call with HTTP ${status}`);
      return;
    }
    // A trailers-only response (an error before any message) carries grpc-status in these headers.
    const grpcStatus = headers['grpc-status'];
    if (grpcStatus !== undefined && grpcStatus !== '0') this.onTrailers(headers);
  }

  private onTrailers(trailers: http2.IncomingHttpHeaders): void {
    const status = trailers['grpc-status'];
    if (status === undefined || status === '0') return;
    const message = decodeGrpcMessage(trailers['grpc-message']);
    this.protocolFailure(`the ANP proxy-server at ${this.proxyName} ended the gRPC stream with status ${String(status)}${message ? `: ${message}` : ''}`);
  }

  private onChunk(chunk: Buffer): void {
    try {
      this.decoder.push(chunk, this.onMessage);
    } catch (err) {
      const what = err instanceof FrameError ? err.message : `undecodable packet: ${(err as Error).message}`;
      this.protocolFailure(`the ANP proxy-server at ${this.proxyName} sent ${what}`);
    }
  }

  private onPacket(packet: Packet): void {
    switch (packet.type) {
      case PacketType.DIAL_RSP: {
        const p = packet as Extract<Packet, { type: 1 }>;
        if (this.state !== 'dialling' || p.random !== this.random) return;
        if (p.error !== '') {
          this.failDial(this.dialFailure(p.error));
        } else if (p.connectID === 0n) {
          this.failDial(new DialError('proxy_protocol_error', `the ANP proxy-server at ${this.proxyName} answered the dial of ${this.authority()} without a connection id`));
        } else {
          this.connectID = p.connectID;
          this.state = 'open';
          this.dialDone?.();
        }
        return;
      }
      case PacketType.DATA: {
        const p = packet as Extract<Packet, { type: 4 }>;
        if (this.state !== 'open' || p.connectID !== this.connectID) return;
        if (p.error !== '') {
          this.destroy(new Error(`the agent reported an error on the tunnel to ${this.authority()}: ${p.error}`));
          return;
        }
        if (p.data.length === 0) return;
        const data = Buffer.from(p.data.buffer, p.data.byteOffset, p.data.length);
        if (!this.push(data)) this.pauseStream();
        return;
      }
      case PacketType.CLOSE_RSP: {
        const p = packet as Extract<Packet, { type: 3 }>;
        if (this.state !== 'open' || (p.connectID !== 0n && p.connectID !== this.connectID)) return;
        // The remote end closed (or the agent went away): every earlier DATA has been delivered in order.
        this.state = 'closed';
        this.endStream();
        this.push(null);
        return;
      }
      default:
        // DIAL_REQ, CLOSE_REQ and DIAL_CLS go the other way; DRAIN concerns agents.
        return;
    }
  }

  private dialFailure(error: string): DialError {
    const said = `the ANP proxy-server at ${this.proxyName} answered the dial of ${this.authority()}: ${error}`;
    switch (agentErrorKind(error)) {
      case 'no-agent':
        return new DialError('agent_unavailable', `no agent is connected for ${this.target?.host} (${said})`);
      case 'dial-timeout':
        return new DialError('agent_dial_timeout', `the agent timed out dialling ${this.authority()} (${said})`);
      default:
        return new DialError('agent_dial_failed', `the agent could not dial ${this.authority()} (${said})`);
    }
  }

  private authority(): string {
    return this.target === undefined ? '?' : `${this.target.host}:${this.target.port}`;
  }

  private protocolFailure(message: string): void {
    if (this.state === 'dialling') {
      this.failDial(new DialError('proxy_protocol_error', message));
    } else if (this.state !== 'closed' || !this.destroyed) {
      this.state = 'closed';
      this.destroy(new Error(message));
    }
  }

  private onStreamEnd(): void {
    if (this.state === 'dialling') {
      this.failDial(new DialError('proxy_protocol_error', `the ANP proxy-server at ${this.proxyName} ended the gRPC stream before answering the dial of ${this.authority()}`));
    } else if (this.state === 'open') {
      // Without CLOSE_RSP the response may be cut short: the tunnel failed rather than ended.
      this.state = 'closed';
      this.destroy(new Error(`the ANP proxy-server at ${this.proxyName} ended the tunnel to ${this.authority()} without closing it`));
    }
  }

  private onStreamError(err: Error): void {
    const message = `the gRPC stream to the ANP proxy-server at ${this.proxyName} failed: ${err.message}`;
    if (this.state === 'dialling') {
      if (isTlsError(err as NodeJS.ErrnoException)) {
        // Under TLS 1.3 the server judges our certificate after our side of the handshake is done: its
        // alert ends the connection, and with it the stream of the first dial on it.
        this.failDial(new DialError('proxy_tls_failed', `TLS to the ANP proxy-server at ${this.proxyName} failed: ${err.message}`, { cause: err }));
        return;
      }
      // A stream opened on a connection whose GOAWAY had just arrived fails with ERR_HTTP2_GOAWAY_SESSION
      // instead of throwing at request(); like REFUSED_STREAM, the server never saw it.
      const refused = this.stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM || (err as NodeJS.ErrnoException).code === 'ERR_HTTP2_GOAWAY_SESSION';
      this.failDial(refused ? new UnsentDial('proxy_protocol_error', message, { cause: err }) : new DialError('proxy_protocol_error', message, { cause: err }));
    }
    else if (this.state === 'open') {
      this.state = 'closed';
      this.destroy(new Error(message, { cause: err }));
    }
  }

  private onStreamClose(): void {
    clearTimeout(this.stallTimer);
    if (this.state === 'dialling') {
      this.failDial(new DialError('proxy_protocol_error', `the gRPC stream to the ANP proxy-server at ${this.proxyName} closed before the dial of ${this.authority()} was answered`));
    } else if (this.state === 'open') {
      this.state = 'closed';
      this.destroy(new Error(`the gRPC stream of the tunnel to ${this.authority()} closed (the proxy-server or its connection went away)`));
    }
  }

  private pauseStream(): void {
    if (this.destroyed) return;
    this.stream.pause();
    if (this.stallTimeoutMs > 0 && this.stallTimer === undefined) {
      this.stallTimer = setTimeout(() => {
        this.stallTimer = undefined;
        this.destroy(new Error(`the tunnel to ${this.authority()} was not read for ${this.stallTimeoutMs} ms; it is aborted because an unread tunnel stalls every tunnel of the cluster's agent`));
      }, this.stallTimeoutMs);
    }
  }

  override _read(): void {
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    if (this.stream.isPaused()) this.stream.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.send([chunk], chunk.length, callback);
  }

  /**
   * The TLS layer writes a record's pieces corked (JSStreamSocket): they go out as one DATA packet, and
   * every packet's prefix and payload as one write of the gRPC stream.
   */
  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    const parts: Buffer[] = new Array(chunks.length);
    let total = 0;
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!.chunk;
      parts[i] = c;
      total += c.length;
    }
    this.send(parts, total, callback);
  }

  private send(parts: Buffer[], total: number, callback: (error?: Error | null) => void): void {
    if (this.state === 'closed') {
      // The remote end is gone (CLOSE_RSP): nothing can reach it any more.
      callback();
      return;
    }
    if (this.state !== 'open') {
      callback(new Error(`the tunnel to ${this.authority()} is not open`));
      return;
    }
    const stream = this.stream;
    stream.cork();
    let ok = true;
    let i = 0;
    let off = 0;
    // Cut into packets of at most MAX_DATA_BYTES, each made of whole parts or pieces of one.
    while (total > 0) {
      const size = Math.min(total, MAX_DATA_BYTES);
      const prefix = encodeDataPrefix(this.connectID, size);
      ok = stream.write(frameStart(prefix, prefix.length + size));
      let left = size;
      while (left > 0) {
        const part = parts[i]!;
        const take = Math.min(left, part.length - off);
        if (take > 0) ok = stream.write(off === 0 && take === part.length ? part : part.subarray(off, off + take));
        left -= take;
        off += take;
        if (off === part.length) {
          i++;
          off = 0;
        }
      }
      total -= size;
    }
    stream.uncork();
    if (ok) callback();
    else stream.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    // Our side is done: ask the agent to close the remote; its CLOSE_RSP ends the readable side.
    if (this.state === 'open' && this.stream.writable) {
      this.stream.write(frame(encodeCloseRequest(this.connectID)));
      const giveUp = setTimeout(() => this.destroy(), END_GRACE_MS);
      giveUp.unref();
      this.once('close', () => clearTimeout(giveUp));
    }
    callback();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.stallTimer);
    if (this.state === 'open' && this.stream.writable) this.stream.write(frame(encodeCloseRequest(this.connectID)));
    this.state = 'closed';
    this.endStream();
    callback(err);
  }

  /**
   * Ends our side of the gRPC stream, which the server takes as the end of the tunnel, and keeps reading
   * (and discarding) what still arrives so that the server's sends to this stream never block: they
   * would block every other tunnel of the same agent. A server that does not end the stream in time gets
   * it reset.
   */
  private endStream(): void {
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    stream.removeAllListeners('data');
    stream.on('data', () => {});
    stream.resume();
    if (stream.writable) stream.end();
    const reset = setTimeout(() => {
      if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
    }, END_GRACE_MS);
    reset.unref();
    stream.once('close', () => clearTimeout(reset));
  }
}

/** grpc-message is percent-encoded (gRPC over HTTP/2, "Responses"). */
function decodeGrpcMessage(v: string | string[] | undefined): string {
  const text = Array.isArray(v) ? v.join(', ') : v ?? '';
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}
