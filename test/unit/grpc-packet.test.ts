import { describe, expect, test } from 'vitest';
import { FrameDecoder, FrameError, frame } from '../../src/tunnel/grpc/frames.ts';
import {
  PacketType,
  decodePacket,
  encodeCloseRequest,
  encodeData,
  encodeDialClose,
  encodeDialRequest,
  type Packet,
} from '../../src/tunnel/grpc/packet.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('ProxyService packets', () => {
  test('DIAL_REQ leaves type 0 off the wire, as proto3 does, and carries a 63-bit random exactly', () => {
    const random = 0x7fff_ffff_ffff_fff1n;
    const bytes = encodeDialRequest('cluster-x.open-cluster-management.proxy:7443', random);
    // Field 1 (type) absent: the packet starts with field 2 (dialRequest), length-delimited.
    expect(bytes[0]).toBe(0x12);
    expect(decodePacket(bytes)).toEqual({ type: PacketType.DIAL_REQ, protocol: 'tcp', address: 'cluster-x.open-cluster-management.proxy:7443', random });
  });

  test('hand-made bytes of the Go encoding decode: DIAL_RSP with an id above 2^53', () => {
    // type=1 (DIAL_RSP); dialResponse { connectID = 2^60 + 1; random = 5 }
    const connectID = (1n << 60n) + 1n;
    const varint = (v: bigint): number[] => {
      const out: number[] = [];
      while (v > 0x7fn) {
        out.push(Number(v & 0x7fn) | 0x80);
        v >>= 7n;
      }
      out.push(Number(v));
      return out;
    };
    const inner = [0x10, ...varint(connectID), 0x18, 5];
    const bytes = new Uint8Array([0x08, 0x01, 0x1a, inner.length, ...inner]);
    expect(decodePacket(bytes)).toEqual({ type: PacketType.DIAL_RSP, error: '', connectID, random: 5n });
  });

  test('DIAL_RSP error text and unknown fields', () => {
    const err = Buffer.from('No agent available');
    // dialResponse { error = "No agent available"; random = 9; field 15 (unknown varint) = 1 }
    const inner = [0x0a, err.length, ...err, 0x18, 9, 0x78, 1];
    const bytes = new Uint8Array([0x08, 0x01, 0x1a, inner.length, ...inner]);
    expect(decodePacket(bytes)).toEqual({ type: PacketType.DIAL_RSP, error: 'No agent available', connectID: 0n, random: 9n });
  });

  test('DATA round trip keeps the payload bytes and the id', () => {
    const payload = Buffer.from([0, 1, 2, 250, 251, 255]);
    const p = decodePacket(encodeData(77n, payload));
    expect(p).toMatchObject({ type: PacketType.DATA, connectID: 77n, error: '' });
    expect(hex((p as { data: Uint8Array }).data)).toBe(hex(payload));
  });

  test('DATA in every shape decodes as the general decoder would (the fast path falls back when unsure)', () => {
    const varint = (v: bigint): number[] => {
      const out: number[] = [];
      let u = BigInt.asUintN(64, v);
      while (u > 0x7fn) {
        out.push(Number(u & 0x7fn) | 0x80);
        u >>= 7n;
      }
      out.push(Number(u));
      return out;
    };
    const ld = (field: number, bytes: number[]): number[] => [(field << 3) | 2, ...varint(BigInt(bytes.length)), ...bytes];
    const packet = (inner: number[]): Uint8Array => new Uint8Array([0x08, 0x04, ...ld(4, inner)]);
    const data = (p: Packet): string => hex((p as { data: Uint8Array }).data);
    // ids around 2^49 (the fast path's limit) and above 2^53 stay exact
    for (const id of [1n, 127n, 128n, (1n << 49n) - 1n, 1n << 49n, (1n << 60n) + 3n, 0x7fff_ffff_ffff_ffffn]) {
      const p = decodePacket(packet([0x08, ...varint(id), ...ld(3, [1, 2, 3])]));
      expect([p.type, (p as { connectID: bigint }).connectID, data(p)]).toEqual([PacketType.DATA, id, '010203']);
    }
    // a negative int64 (10-byte varint) reads as the general decoder reads it
    expect(decodePacket(packet([0x08, ...varint(-2n), ...ld(3, [9])]))).toMatchObject({ connectID: -2n });
    // an error text, fields out of order, a repeated field (the last wins), an unknown field
    expect(decodePacket(packet([0x08, 5, ...ld(2, [...Buffer.from('broken pipe')]), ...ld(3, [7])]))).toMatchObject({ connectID: 5n, error: 'broken pipe' });
    expect(data(decodePacket(packet([...ld(3, [7, 8]), 0x08, 5])))).toBe('0708');
    expect(decodePacket(packet([...ld(3, [7, 8]), 0x08, 5]))).toMatchObject({ connectID: 5n });
    expect(data(decodePacket(packet([0x08, 5, ...ld(3, [1]), ...ld(3, [2, 2])])))).toBe('0202');
    expect(data(decodePacket(packet([0x08, 5, ...ld(3, [4]), 0x78, 1])))).toBe('04');
    // no id, no data, an empty payload
    expect(decodePacket(packet([...ld(3, [6])]))).toMatchObject({ connectID: 0n, error: '' });
    expect(data(decodePacket(packet([0x08, 5])))).toBe('');
    expect(decodePacket(new Uint8Array([0x08, 0x04]))).toMatchObject({ type: PacketType.DATA, connectID: 0n, error: '' });
    // a type field after the payload, as another encoder might put it
    expect(decodePacket(new Uint8Array([...ld(4, [0x08, 5, ...ld(3, [1])]), 0x08, 0x04]))).toMatchObject({ type: PacketType.DATA, connectID: 5n });
    // cut short: the data field claims more bytes than the packet holds
    expect(() => decodePacket(packet([0x08, 5, 0x1a, 10, 1, 2]))).toThrow();
    expect(() => decodePacket(new Uint8Array([0x08, 0x04, 0x22, 10, 0x08, 5]))).toThrow();
  });

  test('CLOSE_REQ, DIAL_CLS and an empty CLOSE_RSP', () => {
    expect(decodePacket(encodeCloseRequest(3n))).toEqual({ type: PacketType.CLOSE_REQ, connectID: 3n });
    expect(decodePacket(encodeDialClose(12345678901234567n))).toEqual({ type: PacketType.DIAL_CLS, random: 12345678901234567n });
    // type=3 with no payload at all: the server's CLOSE_RSP for connection 0 after an agent died.
    expect(decodePacket(new Uint8Array([0x08, 0x03]))).toEqual({ type: PacketType.CLOSE_RSP, error: '', connectID: 0n });
  });

  test('a type this client does not know is reported as unknown, not misread', () => {
    expect(decodePacket(new Uint8Array([0x08, 0x63]))).toEqual({ type: 99, unknown: true });
  });

  test('malformed protobuf throws', () => {
    expect(() => decodePacket(new Uint8Array([0x22, 0x10, 0x01]))).toThrow();
  });
});

describe('gRPC message framing', () => {
  const messages = (chunks: Buffer[], max = 1024): string[] => {
    const d = new FrameDecoder(max);
    const out: string[] = [];
    for (const c of chunks) d.push(c, (m) => out.push(m.toString()));
    return out;
  };

  test('several messages in one chunk, and one message cut across many chunks', () => {
    const all = Buffer.concat([frame(Buffer.from('one')), frame(Buffer.from('two')), frame(Buffer.from('three'))]);
    expect(messages([all])).toEqual(['one', 'two', 'three']);
    const pieces: Buffer[] = [];
    for (let i = 0; i < all.length; i++) pieces.push(all.subarray(i, i + 1));
    expect(messages(pieces)).toEqual(['one', 'two', 'three']);
  });

  test('an empty message, and a message exactly at the limit', () => {
    expect(messages([frame(Buffer.alloc(0)), frame(Buffer.alloc(8, 0x61))], 8)).toEqual(['', 'aaaaaaaa']);
  });

  test('an oversized length is refused before its bytes are collected', () => {
    const d = new FrameDecoder(8);
    const head = Buffer.from([0, 0, 0, 0, 9]);
    expect(() => d.push(head, () => {})).toThrow(FrameError);
    const split = new FrameDecoder(8);
    split.push(Buffer.from([0, 0]), () => {});
    expect(() => split.push(Buffer.from([0, 0, 9, 1]), () => {})).toThrow(/exceeds/);
  });

  test('a compressed message is refused (no compression is negotiated)', () => {
    expect(() => new FrameDecoder(8).push(Buffer.from([1, 0, 0, 0, 0]), () => {})).toThrow(/compressed/);
  });
});
