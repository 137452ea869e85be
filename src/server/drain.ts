import type { StopSignal } from '../upstream/forward.ts';

/**
 * Shutdown state shared by the front and the proxy handler. Draining starts at SIGTERM (readiness fails,
 * h1 responses carry Connection: close); `stopStreams()` comes once short requests are done or the grace
 * period is over, and ends every request still running: long streams cleanly, the rest cut off.
 */
export class DrainState {
  draining = false;
  private shortInFlight = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly streamsStop = new StopListeners();

  /** What every request in flight listens on, until it is over. */
  get shutdownSignal(): StopSignal {
    return this.streamsStop;
  }

  /** Counts a short (not long-running) request; call the result when it is over. */
  shortStarted(): () => void {
    this.shortInFlight++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.shortInFlight--;
      if (this.shortInFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    };
  }

  get shortRequestsInFlight(): number {
    return this.shortInFlight;
  }

  /** Resolves true once no short request is in flight, or false after `timeoutMs`. */
  whenShortRequestsDone(timeoutMs: number): Promise<boolean> {
    if (this.shortInFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.idleWaiters = this.idleWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.idleWaiters.push(done);
    });
  }

  stopStreams(): void {
    this.streamsStop.stop();
  }
}

/** Listeners called once, in the order they were added, when the streams are stopped. */
class StopListeners implements StopSignal {
  stopped = false;
  private readonly listeners = new Set<() => void>();

  add(listener: () => void): void {
    this.listeners.add(listener);
  }

  delete(listener: () => void): void {
    this.listeners.delete(listener);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    // Over a copy, as each listener removes itself when its request finishes; one removed by an
    // earlier listener is not called (as with an AbortSignal).
    for (const listener of [...this.listeners]) if (this.listeners.has(listener)) listener();
    this.listeners.clear();
  }
}
