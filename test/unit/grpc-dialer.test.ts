import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { isDialError } from '../../src/tunnel/dialer.ts';
import { GrpcDialer, type GrpcDialerOptions } from '../../src/tunnel/grpc/grpc-dialer.ts';
import { PacketType, type Packet } from '../../src/tunnel/grpc/packet.ts';
import { startFakeGrpcProxy, type FakeGrpcProxy } from '../harness/fake-grpc-proxy.ts';

// The dialer's connection handling against a stand-in gRPC frontend (test/harness/fake-grpc-proxy.ts);
// test/integration/grpc-mode.test.ts runs the same dialer against the real ANP proxy-server.
let dir: string;
let echo: net.Server;
let echoPort: number;
let flood: net.Server;
let floodPort: number;
let fake: FakeGrpcProxy | undefined;
const dialers: GrpcDialer[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'grpc-dialer-'));
  echo = net.createServer((s) => s.pipe(s).on('error', () => {}));
  // 16 MiB, far more than a tunnel buffers for a reader that does not read, then the end.
  flood = net.createServer((s) => {
    s.on('error', () => {});
    const chunk = Buffer.alloc(64 * 1024, 1);
    let left = 256;
    const pump = (): void => {
      while (!s.destroyed && left > 0) {
        left--;
        if (!s.write(chunk)) return;
      }
      if (left === 0) s.end();
    };
    s.on('drain', pump);
    pump();
  });
  await Promise.all([new Promise<void>((r) => echo.listen(0, '127.0.0.1', r)), new Promise<void>((r) => flood.listen(0, '127.0.0.1', r))]);
  echoPort = (echo.address() as net.AddressInfo).port;
  floodPort = (flood.address() as net.AddressInfo).port;
});

afterEach(async () => {
  for (const d of dialers.splice(0)) d.close();
  await fake?.close();
  fake = undefined;
});

afterAll(() => {
  echo.close();
  flood.close();
  rmSync(dir, { recursive: true, force: true });
});

let n = 0;
async function setUp(fakeOpts: { silent?: string[]; noAgentOnSessions?: number[] } = {}, dialerOpts: Partial<GrpcDialerOptions> = {}): Promise<{ fake: FakeGrpcProxy; dialer: GrpcDialer }> {
  fake = await startFakeGrpcProxy({ path: path.join(dir, `fake-${n++}.sock`), targets: { 'echo:1': echoPort, 'flood:1': floodPort }, ...fakeOpts });
  const dialer = new GrpcDialer({
    endpoint: { transport: 'uds', path: fake.path },
    proxyTls: () => undefined,
    connections: 2,
    keepaliveIntervalMs: 0,
    connectTimeoutMs: 2_000,
    agentRetryAfterSeconds: 3,
    stallTimeoutMs: 0,
    ...dialerOpts,
  });
  dialers.push(dialer);
  return { fake, dialer };
}

const ECHO = { host: 'echo', port: 1 };

async function roundTrip(t: Duplex, text: string): Promise<string> {
  const got = new Promise<string>((resolve) => t.once('data', (d: Buffer) => resolve(d.toString())));
  t.write(text);
  return got;
}

const packetsOf = (f: FakeGrpcProxy, type: number): Packet[] => f.received.filter((r) => r.packet.type === type).map((r) => r.packet);

describe('gRPC dialer: connections', () => {
  test('the set fills before streams share a connection, then tunnels spread over it', async () => {
    const { fake, dialer } = await setUp({}, { connections: 3 });
    const tunnels = [];
    for (let i = 0; i < 6; i++) tunnels.push(await dialer.dial(ECHO));
    expect(fake.sessions.length).toBe(3);
    const perSession = [0, 1, 2].map((s) => fake.received.filter((r) => r.session === s && r.packet.type === PacketType.DIAL_REQ).length);
    expect(perSession).toEqual([2, 2, 2]);
    for (const t of tunnels) expect(await roundTrip(t, 'ping')).toBe('ping');
    for (const t of tunnels) t.destroy();
  });

  test('dial randoms are distinct and never zero', async () => {
    const { fake, dialer } = await setUp({}, { connections: 1 });
    const tunnels = await Promise.all(Array.from({ length: 50 }, () => dialer.dial(ECHO)));
    const randoms = packetsOf(fake, PacketType.DIAL_REQ).map((p) => (p as { random: bigint }).random);
    expect(new Set(randoms).size).toBe(50);
    expect(randoms.every((r) => r > 0n && r < 1n << 63n)).toBe(true);
    for (const t of tunnels) t.destroy();
  });

  test('GOAWAY: the open tunnel goes on, new tunnels use a new connection', async () => {
    const { fake, dialer } = await setUp({}, { connections: 1 });
    const first = await dialer.dial(ECHO);
    expect(await roundTrip(first, 'a')).toBe('a');
    // Stream 1 may finish after GOAWAY; a dial that races the GOAWAY gets REFUSED_STREAM and is retried.
    fake.sessions[0]!.goaway(0, 1);
    const second = await dialer.dial(ECHO);
    expect(fake.sessions.length).toBe(2);
    expect(await roundTrip(second, 'b')).toBe('b');
    expect(await roundTrip(first, 'c')).toBe('c');
    first.destroy();
    second.destroy();
  });

  test('a connection that dies fails only its own tunnels; the next dial opens a new one', async () => {
    const { fake, dialer } = await setUp({}, { connections: 2 });
    const onFirst = await dialer.dial(ECHO);
    const onSecond = await dialer.dial(ECHO);
    const failed = new Promise<Error | undefined>((resolve) => {
      onFirst.once('error', resolve);
      onFirst.once('close', () => resolve(undefined));
    });
    fake.sessions[0]!.destroy();
    await failed;
    expect(onFirst.destroyed).toBe(true);
    expect(await roundTrip(onSecond, 'still here')).toBe('still here');
    const third = await dialer.dial(ECHO);
    expect(await roundTrip(third, 'new')).toBe('new');
    expect(fake.sessions.length).toBe(3);
    onSecond.destroy();
    third.destroy();
  });
});

describe('gRPC dialer: dials', () => {
  test('"No agent available" is retried once on another connection (another replica)', async () => {
    const { fake, dialer } = await setUp({ noAgentOnSessions: [0] }, { connections: 2 });
    const t = await dialer.dial(ECHO);
    expect(await roundTrip(t, 'x')).toBe('x');
    expect(fake.received.filter((r) => r.packet.type === PacketType.DIAL_REQ).map((r) => r.session)).toEqual([0, 1]);
    t.destroy();
  });

  test('with one connection there is no other replica: 503 with Retry-After', async () => {
    const { dialer } = await setUp({ noAgentOnSessions: [0] }, { connections: 1 });
    const err = await dialer.dial(ECHO).then(() => undefined, (e: unknown) => e);
    expect(isDialError(err) && [err.outcome, err.statusCode, err.retryAfterSeconds]).toEqual(['agent_unavailable', 503, 3]);
  });

  test('no DIAL_RSP in time: 504, DIAL_CLS with the same random, and the stream is ended', async () => {
    const { fake, dialer } = await setUp({ silent: ['echo:1'] }, { connectTimeoutMs: 300 });
    const err = await dialer.dial(ECHO).then(() => undefined, (e: unknown) => e);
    expect(isDialError(err) && [err.outcome, err.statusCode]).toEqual(['agent_dial_timeout', 504]);
    const req = packetsOf(fake, PacketType.DIAL_REQ)[0] as { random: bigint };
    await expect.poll(() => packetsOf(fake, PacketType.DIAL_CLS).length).toBe(1);
    expect((packetsOf(fake, PacketType.DIAL_CLS)[0] as { random: bigint }).random).toBe(req.random);
    await expect.poll(() => fake.openStreams()).toBe(0);
  });

  test('a cancelled dial sends DIAL_CLS too', async () => {
    const { fake, dialer } = await setUp({ silent: ['echo:1'] });
    const abort = new AbortController();
    const pending = dialer.dial(ECHO, abort.signal).then(() => undefined, (e: unknown) => e);
    await expect.poll(() => packetsOf(fake, PacketType.DIAL_REQ).length).toBe(1);
    abort.abort();
    const err = await pending;
    expect(isDialError(err) && err.outcome).toBe('aborted');
    await expect.poll(() => packetsOf(fake, PacketType.DIAL_CLS).length).toBe(1);
  });

  test('corked writes go out as DATA packets of at most 256 KiB, in order, and come back intact', async () => {
    const { fake, dialer } = await setUp();
    const t = await dialer.dial(ECHO);
    const parts = [Buffer.alloc(100 * 1024, 1), Buffer.alloc(0), Buffer.alloc(300 * 1024, 2), Buffer.from('tail!')];
    const sent = Buffer.concat(parts);
    const chunks: Buffer[] = [];
    let got = 0;
    const back = new Promise<void>((resolve) => t.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= sent.length) resolve();
    }));
    t.cork();
    for (const p of parts) t.write(p);
    t.uncork();
    t.write(Buffer.from('after'));
    await back;
    const all = Buffer.concat(chunks);
    expect(all.length).toBe(sent.length + 5);
    expect(all.equals(Buffer.concat([sent, Buffer.from('after')]))).toBe(true);
    const sizes = packetsOf(fake, PacketType.DATA).map((p) => (p as { data: Uint8Array }).data.length);
    expect(sizes).toEqual([256 * 1024, sent.length - 256 * 1024, 5]);
    t.destroy();
  });

  test('every byte received arrives, in order, before the end that CLOSE_RSP brings', async () => {
    const { dialer } = await setUp();
    const t = await dialer.dial({ host: 'flood', port: 1 });
    let got = 0;
    let wrong = 0;
    t.on('data', (d: Buffer) => {
      got += d.length;
      for (let i = 0; i < d.length; i += 4093) if (d[i] !== 1) wrong++;
    });
    await new Promise((r) => t.once('end', r));
    expect([got, wrong]).toEqual([16 * 1024 * 1024, 0]);
    t.destroy();
  });

  test('end() is a full close: CLOSE_REQ, then the readable side ends on CLOSE_RSP', async () => {
    const { fake, dialer } = await setUp();
    const t = await dialer.dial(ECHO);
    expect(await roundTrip(t, 'bye')).toBe('bye');
    const ended = new Promise((r) => t.once('end', r));
    t.resume();
    t.end();
    await ended;
    expect(packetsOf(fake, PacketType.CLOSE_REQ).length).toBe(1);
    await expect.poll(() => fake.openStreams()).toBe(0);
  });

  test('a tunnel left unread past the stall timeout is aborted; another tunnel is unaffected', async () => {
    const { dialer } = await setUp({}, { connections: 1, stallTimeoutMs: 400 });
    const stalled = await dialer.dial({ host: 'flood', port: 1 });
    const other = await dialer.dial(ECHO);
    // Nobody reads `stalled`: its buffer fills, the stream is paused and the clock runs.
    const err = await new Promise<Error>((resolve) => stalled.once('error', resolve));
    expect(err.message).toMatch(/was not read for 400 ms/);
    expect(await roundTrip(other, 'alive')).toBe('alive');
    other.destroy();
  });

  test('a proxy-server that is not there: 502 naming it', async () => {
    const dialer = new GrpcDialer({ endpoint: { transport: 'uds', path: path.join(dir, 'nothing.sock') }, proxyTls: () => undefined, connections: 1, keepaliveIntervalMs: 0, connectTimeoutMs: 1_000, agentRetryAfterSeconds: 1, stallTimeoutMs: 0 });
    dialers.push(dialer);
    const err = await dialer.dial(ECHO).then(() => undefined, (e: unknown) => e);
    expect(isDialError(err) && [err.outcome, err.statusCode]).toEqual(['proxy_unreachable', 502]);
    expect((err as Error).message).toMatch(/nothing\.sock/);
  });
});
