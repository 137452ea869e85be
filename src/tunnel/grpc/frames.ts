/**
 * gRPC's length-prefixed messages on an HTTP/2 stream: one byte "compressed" flag (always 0 here: no
 * grpc-encoding is negotiated), a 4-byte big-endian length, then the message.
 */
export const FRAME_HEADER_BYTES = 5;

/**
 * A frame's header for a message of `messageLength` bytes, followed by `start`, the message's first bytes;
 * the rest of the message is written after it.
 */
export function frameStart(start: Uint8Array, messageLength: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + start.length);
  out[0] = 0;
  out.writeUInt32BE(messageLength, 1);
  out.set(start, FRAME_HEADER_BYTES);
  return out;
}

export function frame(message: Uint8Array): Buffer {
  return frameStart(message, message.length);
}

export class FrameError extends Error {
  override readonly name = 'FrameError';
}

/**
 * Cuts a stream of chunks into whole messages. A message that arrives in one chunk is handed out as a view
 * of it; only messages split across chunks are copied together.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly maxMessageBytes: number;

  constructor(maxMessageBytes: number) {
    this.maxMessageBytes = maxMessageBytes;
  }

  /** Calls `onMessage` for every message completed by `chunk`; throws FrameError on a bad prefix. */
  push(chunk: Buffer, onMessage: (message: Buffer) => void): void {
    let buf = chunk;
    if (this.pendingBytes > 0) {
      this.pending.push(chunk);
      // Join the pieces only once the message they belong to is complete: a large message arriving in
      // many small chunks would otherwise be copied again for every chunk.
      const first = this.pending[0]!;
      if (first.length >= FRAME_HEADER_BYTES && first.readUInt32BE(1) <= this.maxMessageBytes &&
          this.pendingBytes + chunk.length < FRAME_HEADER_BYTES + first.readUInt32BE(1)) {
        this.pendingBytes += chunk.length;
        return;
      }
      buf = Buffer.concat(this.pending, this.pendingBytes + chunk.length);
      this.pending = [];
      this.pendingBytes = 0;
    }
    let pos = 0;
    while (buf.length - pos >= FRAME_HEADER_BYTES) {
      if (buf[pos] !== 0) throw new FrameError('compressed gRPC message, but no compression was negotiated');
      const length = buf.readUInt32BE(pos + 1);
      if (length > this.maxMessageBytes) throw new FrameError(`gRPC message of ${length} bytes exceeds the limit of ${this.maxMessageBytes}`);
      const end = pos + FRAME_HEADER_BYTES + length;
      if (end > buf.length) break;
      onMessage(buf.subarray(pos + FRAME_HEADER_BYTES, end));
      pos = end;
    }
    if (pos < buf.length) {
      const rest = buf.subarray(pos);
      this.pending.push(rest);
      this.pendingBytes = rest.length;
    }
  }

  /** Bytes of an incomplete message still held. */
  get buffered(): number {
    return this.pendingBytes;
  }
}
