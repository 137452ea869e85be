import { describe, expect, test } from 'vitest';
import { DrainState } from '../../src/server/drain.ts';

describe('DrainState', () => {
  test('waits for short requests, each counted once however often it reports done', async () => {
    const d = new DrainState();
    const a = d.shortStarted();
    const b = d.shortStarted();
    let resolved: boolean | undefined;
    const waiting = d.whenShortRequestsDone(60_000).then((v) => (resolved = v));
    a();
    a();
    await Promise.resolve();
    expect(resolved).toBeUndefined();
    expect(d.shortRequestsInFlight).toBe(1);
    b();
    expect(await waiting).toBe(true);
  });

  test('gives up after the grace period with the requests still counted', async () => {
    const d = new DrainState();
    d.shortStarted();
    expect(await d.whenShortRequestsDone(10)).toBe(false);
    expect(d.shortRequestsInFlight).toBe(1);
  });

  test('stopStreams aborts the shared signal once, whatever the number of listeners', () => {
    const d = new DrainState();
    let calls = 0;
    for (let i = 0; i < 50; i++) d.shutdownSignal.addEventListener('abort', () => calls++, { once: true });
    d.stopStreams();
    d.stopStreams();
    expect(d.shutdownSignal.aborted).toBe(true);
    expect(calls).toBe(50);
  });
});
