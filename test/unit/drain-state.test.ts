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
    const entries = listeners.map((l) => d.shutdownSignal.add(l));
    d.shutdownSignal.delete(entries[7]!);
    d.shutdownSignal.delete(entries[7]!);
    expect(d.shutdownSignal.stopped).toBe(false);
    d.stopStreams();
    d.stopStreams();
    expect(d.shutdownSignal.stopped).toBe(true);
    expect(calls).toEqual(Array.from({ length: 50 }, (_, i) => i).filter((i) => i !== 7));
  });

  test('entries deleted from the head, the middle and the tail leave the others in order', () => {
    const d = new DrainState();
    const calls: number[] = [];
    const entries = Array.from({ length: 6 }, (_, i) => d.shutdownSignal.add(() => calls.push(i)));
    for (const i of [0, 3, 5]) d.shutdownSignal.delete(entries[i]!);
    d.shutdownSignal.add(() => calls.push(6));
    d.stopStreams();
    expect(calls).toEqual([1, 2, 4, 6]);
  });

  test('a listener removed by an earlier one while the streams stop is not called', () => {
    const d = new DrainState();
    const calls: string[] = [];
    const b = (): void => {
      calls.push('b');
    };
    const a = (): void => {
      calls.push('a');
      d.shutdownSignal.delete(entryA);
      d.shutdownSignal.delete(entryB);
    };
    const entryA = d.shutdownSignal.add(a);
    const entryB = d.shutdownSignal.add(b);
    d.stopStreams();
    expect(calls).toEqual(['a']);
    // Added after the stop: never called.
    d.shutdownSignal.add(b);
    d.stopStreams();
    expect(calls).toEqual(['a']);
  });
});
