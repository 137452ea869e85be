import net from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startRoundRobinBalancer, type RoundRobinBalancer } from '../harness/balancer.ts';

// The loopback TCP balancer of test/harness/balancer.ts, against plain echo backends that greet with their index.
const backends: net.Server[] = [];
const backendSockets = new Set<net.Socket>();
let lb: RoundRobinBalancer;

beforeAll(async () => {
  for (let i = 0; i < 3; i++) {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      backendSockets.add(s);
      s.once('close', () => backendSockets.delete(s));
      s.on('error', () => {});
      s.write(`backend ${i}\n`);
      s.pipe(s);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    backends.push(server);
  }
  lb = await startRoundRobinBalancer(backends.map((b) => (b.address() as net.AddressInfo).port));
});

afterAll(async () => {
  await lb?.close();
  for (const s of backendSockets) s.destroy();
  await Promise.all(backends.map((b) => new Promise((r) => b.close(r))));
});

/** Connects through the balancer, sends `text`, half-closes, and reads everything until the end. */
function exchange(text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(lb.port, '127.0.0.1', () => s.end(text));
    let got = '';
    s.setEncoding('utf8').on('data', (c: string) => (got += c));
    s.once('end', () => resolve(got));
    s.once('error', reject);
  });
}

describe('round-robin TCP balancer', () => {
  test('connections go to the backends in turn, and bytes and half-closes pass both ways', async () => {
    const before = lb.assignments.length;
    const greetings: string[] = [];
    for (let i = 0; i < 7; i++) greetings.push(await exchange(`hello ${i}`));
    expect(greetings).toEqual(Array.from({ length: 7 }, (_v, i) => `backend ${i % 3}\nhello ${i}`));
    expect(lb.assignments.slice(before)).toEqual([0, 1, 2, 0, 1, 2, 0]);
  });

  test('concurrent connections are spread round robin too, and each pair closes together', async () => {
    const before = lb.assignments.length;
    const start = lb.assignments.length % 3;
    const sockets = await Promise.all(Array.from({ length: 6 }, () => new Promise<net.Socket>((resolve) => {
      const s = net.connect(lb.port, '127.0.0.1');
      s.setEncoding('utf8').once('data', () => resolve(s));
    })));
    expect(lb.assignments.slice(before)).toEqual(Array.from({ length: 6 }, (_v, i) => (start + i) % 3));
    expect(lb.open).toBe(6);
    // A backend that goes away closes its client; clients that go away close their backend connections.
    const firstClosed = Promise.race(sockets.map((s) => new Promise<net.Socket>((r) => s.once('close', () => r(s)))));
    [...backendSockets].at(-1)!.destroy();
    const gone = await firstClosed;
    await expect.poll(() => lb.open, { timeout: 2000 }).toBe(5);
    for (const s of sockets) if (s !== gone) s.destroy();
    await expect.poll(() => lb.open, { timeout: 2000 }).toBe(0);
    await expect.poll(() => backendSockets.size, { timeout: 2000 }).toBe(0);
  });

  test('an unreachable backend closes the client connection', async () => {
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.1', resolve));
    const port = (dead.address() as net.AddressInfo).port;
    await new Promise((r) => dead.close(r));
    const lone = await startRoundRobinBalancer([port]);
    try {
      const closed = await new Promise<boolean>((resolve) => {
        const s = net.connect(lone.port, '127.0.0.1');
        s.on('error', () => {});
        s.once('close', () => resolve(true));
      });
      expect(closed).toBe(true);
      expect(lone.open).toBe(0);
    } finally {
      await lone.close();
    }
  });
});
