import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

/**
 * The `Packet` message of ANP's `ProxyService/Proxy` stream (konnectivity-client proto/client/client.proto),
 * written from its documented field numbers. proto3 leaves zero values off the wire, so a packet without
 * `type` is a DIAL_REQ, and every int64 is a bigint: connection ids and dial randoms exceed 2^53.
 */
export const PacketType = {
  DIAL_REQ: 0,
  DIAL_RSP: 1,
  CLOSE_REQ: 2,
  CLOSE_RSP: 3,
  DATA: 4,
  DIAL_CLS: 5,
  DRAIN: 6,
} as const;

export type Packet =
  | { type: typeof PacketType.DIAL_REQ; protocol: string; address: string; random: bigint }
  | { type: typeof PacketType.DIAL_RSP; error: string; connectID: bigint; random: bigint }
  | { type: typeof PacketType.CLOSE_REQ; connectID: bigint }
  | { type: typeof PacketType.CLOSE_RSP; error: string; connectID: bigint }
  | { type: typeof PacketType.DATA; connectID: bigint; error: string; data: Uint8Array }
  | { type: typeof PacketType.DIAL_CLS; random: bigint }
  | { type: typeof PacketType.DRAIN }
  /** A type this client does not know (a newer server's); ignored. */
  | { type: number; unknown: true };

// Packet's fields: type = 1, then one payload message per packet type.
const FIELD_TYPE = 1;
const PAYLOAD_FIELD: Record<number, number> = {
  [PacketType.DIAL_REQ]: 2,
  [PacketType.DIAL_RSP]: 3,
  [PacketType.DATA]: 4,
  [PacketType.CLOSE_REQ]: 5,
  [PacketType.CLOSE_RSP]: 6,
  [PacketType.DIAL_CLS]: 7,
  [PacketType.DRAIN]: 8,
};

function header(w: BinaryWriter, type: number): BinaryWriter {
  if (type !== PacketType.DIAL_REQ) w.tag(FIELD_TYPE, WireType.Varint).int32(type);
  return w.tag(PAYLOAD_FIELD[type]!, WireType.LengthDelimited).fork();
}

export function encodeDialRequest(address: string, random: bigint): Uint8Array {
  // The Go client sets type explicitly even though 0 is the default; proto3 drops it either way.
  return header(new BinaryWriter(), PacketType.DIAL_REQ)
    .tag(1, WireType.LengthDelimited).string('tcp')
    .tag(2, WireType.LengthDelimited).string(address)
    .tag(3, WireType.Varint).int64(random)
    .join().finish();
}

export function encodeCloseRequest(connectID: bigint): Uint8Array {
  return header(new BinaryWriter(), PacketType.CLOSE_REQ).tag(1, WireType.Varint).int64(connectID).join().finish();
}

export function encodeDialClose(random: bigint): Uint8Array {
  return header(new BinaryWriter(), PacketType.DIAL_CLS).tag(1, WireType.Varint).int64(random).join().finish();
}

/**
 * Everything of a DATA packet that comes before its payload bytes: the caller sends this prefix and then
 * the payload as it is, so relayed bytes are never copied into a new buffer.
 */
export function encodeDataPrefix(connectID: bigint, payloadLength: number): Uint8Array {
  const inner = new BinaryWriter().tag(1, WireType.Varint).int64(connectID).tag(3, WireType.LengthDelimited).uint32(payloadLength).finish();
  return new BinaryWriter()
    .tag(FIELD_TYPE, WireType.Varint).int32(PacketType.DATA)
    .tag(PAYLOAD_FIELD[PacketType.DATA]!, WireType.LengthDelimited).uint32(inner.length + payloadLength)
    .raw(inner)
    .finish();
}

/** A whole DATA packet; for tests and small writes. */
export function encodeData(connectID: bigint, data: Uint8Array): Uint8Array {
  const prefix = encodeDataPrefix(connectID, data.length);
  const out = new Uint8Array(prefix.length + data.length);
  out.set(prefix);
  out.set(data, prefix.length);
  return out;
}

/** A payload message's fields: varints as bigint (every varint field here is an int64), the rest as bytes. */
function readFields(bytes: Uint8Array): Map<number, bigint | Uint8Array> {
  const fields = new Map<number, bigint | Uint8Array>();
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (wire === WireType.Varint) {
      const v = r.int64();
      fields.set(field, typeof v === 'bigint' ? v : BigInt(v));
    } else if (wire === WireType.LengthDelimited) {
      fields.set(field, r.bytes());
    } else {
      r.skip(wire, field);
    }
  }
  return fields;
}

const utf8 = new TextDecoder();
const int64 = (f: Map<number, bigint | Uint8Array>, n: number): bigint => {
  const v = f.get(n);
  return typeof v === 'bigint' ? v : 0n;
};
const bytesOf = (f: Map<number, bigint | Uint8Array>, n: number): Uint8Array => {
  const v = f.get(n);
  return v instanceof Uint8Array ? v : new Uint8Array(0);
};
const text = (f: Map<number, bigint | Uint8Array>, n: number): string => {
  const b = bytesOf(f, n);
  return b.length === 0 ? '' : utf8.decode(b);
};

const EMPTY = new Uint8Array(0);
/** Where the last readSmallVarint stopped; module state rather than an object per call. */
let varintEnd = 0;

/**
 * A varint of at most 7 bytes (below 2^49, so exact as a number) at `pos`, ending before `end`; -1 when it
 * is longer, runs past `end`, or is cut short: the caller then leaves the packet to the general decoder.
 */
function readSmallVarint(b: Uint8Array, pos: number, end: number): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 7 && pos < end; i++) {
    const byte = b[pos++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      varintEnd = pos;
      return value;
    }
    scale *= 128;
  }
  return -1;
}

/**
 * The DATA packets the bulk of a tunnel is made of, as Go marshals them: `type` (4), then the `data`
 * payload holding `connectID`, no `error`, and the bytes, each field once and in field order. Anything
 * else (an error text, unknown or repeated fields, another order, large or negative varints, bad bytes)
 * returns undefined and goes through the general decoder, so the result never differs from it.
 */
function decodePlainData(b: Uint8Array): Packet | undefined {
  const end = b.length;
  // 0x08 0x04: field 1 (type), varint DATA; 0x22: field 4 (data), length-delimited.
  if (end < 3 || b[0] !== 0x08 || b[1] !== PacketType.DATA || b[2] !== 0x22) return undefined;
  const innerLength = readSmallVarint(b, 3, end);
  if (innerLength < 0 || varintEnd + innerLength !== end) return undefined;
  let pos = varintEnd;
  let connectID = 0;
  if (pos < end && b[pos] === 0x08) {
    connectID = readSmallVarint(b, pos + 1, end);
    if (connectID < 0) return undefined;
    pos = varintEnd;
  }
  let data: Uint8Array = EMPTY;
  if (pos < end && b[pos] === 0x1a) {
    const length = readSmallVarint(b, pos + 1, end);
    if (length < 0 || varintEnd + length > end) return undefined;
    data = b.subarray(varintEnd, varintEnd + length);
    pos = varintEnd + length;
  }
  if (pos !== end) return undefined;
  return { type: PacketType.DATA, connectID: BigInt(connectID), error: '', data };
}

/** Decodes one Packet; throws on malformed protobuf. DATA payloads are views into `bytes`, not copies. */
export function decodePacket(bytes: Uint8Array): Packet {
  const data = decodePlainData(bytes);
  if (data !== undefined) return data;
  const top = readFields(bytes);
  const type = Number(int64(top, FIELD_TYPE));
  const payloadField = PAYLOAD_FIELD[type];
  if (payloadField === undefined) return { type, unknown: true };
  // A payload of another kind than the type says is read as an empty payload of the right kind.
  const f = readFields(bytesOf(top, payloadField));
  switch (type) {
    case PacketType.DIAL_REQ:
      return { type, protocol: text(f, 1), address: text(f, 2), random: int64(f, 3) };
    case PacketType.DIAL_RSP:
      return { type, error: text(f, 1), connectID: int64(f, 2), random: int64(f, 3) };
    case PacketType.DATA:
      return { type, connectID: int64(f, 1), error: text(f, 2), data: bytesOf(f, 3) };
    case PacketType.CLOSE_REQ:
      return { type, connectID: int64(f, 1) };
    case PacketType.CLOSE_RSP:
      return { type, error: text(f, 1), connectID: int64(f, 2) };
    case PacketType.DIAL_CLS:
      return { type, random: int64(f, 1) };
    default:
      return { type: PacketType.DRAIN };
  }
}
