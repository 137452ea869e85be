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

  test('stopStreams calls every listener once, in order, whatever the number; removed ones are not called', () => {
    const d = new DrainState();
    const calls: number[] = [];
    const listeners = Array.from({ length: 50 }, (_, i) => () => calls.push(i));
    for (const l of listeners) d.shutdownSignal.add(l);
    d.shutdownSignal.delete(listeners[7]!);
    expect(d.shutdownSignal.stopped).toBe(false);
    d.stopStreams();
    d.stopStreams();
    expect(d.shutdownSignal.stopped).toBe(true);
    expect(calls).toEqual(Array.from({ length: 50 }, (_, i) => i).filter((i) => i !== 7));
  });

  test('a listener removed by an earlier one while the streams stop is not called', () => {
    const d = new DrainState();
    const calls: string[] = [];
    const b = (): void => {
      calls.push('b');
    };
    const a = (): void => {
      calls.push('a');
      d.shutdownSignal.delete(a);
      d.shutdownSignal.delete(b);
    };
    d.shutdownSignal.add(a);
    d.shutdownSignal.add(b);
    d.stopStreams();
    expect(calls).toEqual(['a']);
  });
});
