import type { StopEntry, StopSignal } from '../upstream/forward.ts';

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

/** A registration, linked into its list until it is deleted or called. */
class Entry implements StopEntry {
  prev: Entry | undefined = undefined;
  next: Entry | undefined = undefined;
  linked = false;
  readonly listener: () => void;
  constructor(listener: () => void) {
    this.listener = listener;
  }
}

/**
 * Listeners called once, in the order they were added, when the streams are stopped. A linked list, not
 * a Set: with a Set that got an entry added and deleted per request, nearly every request's objects were
 * promoted to old space (1.4-1.7 MB per scavenge instead of 33 KB at 1 KiB @64, +40-50 MiB of RSS; bench/
 * README.md, finding 15). V8 rebuilds such a table every few dozen requests and links the retired table
 * to its successor; a retired table already in old space is garbage that young-generation collections
 * still read, so the requests it listed, and all they pointed to, survived until a full collection. An
 * unlinked entry points to nothing.
 */
class StopListeners implements StopSignal {
  stopped = false;
  private head: Entry | undefined;
  private tail: Entry | undefined;

  add(listener: () => void): StopEntry {
    const entry = new Entry(listener);
    // Once stopped, nothing more is called (as with an AbortSignal that already fired).
    if (this.stopped) return entry;
    entry.linked = true;
    entry.prev = this.tail;
    if (this.tail === undefined) this.head = entry;
    else this.tail.next = entry;
    this.tail = entry;
    return entry;
  }

  delete(stopEntry: StopEntry): void {
    const entry = stopEntry as Entry;
    if (!entry.linked) return;
    entry.linked = false;
    if (entry.prev === undefined) this.head = entry.next;
    else entry.prev.next = entry.next;
    if (entry.next === undefined) this.tail = entry.prev;
    else entry.next.prev = entry.prev;
    entry.prev = undefined;
    entry.next = undefined;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    // The first entry each time: a listener may delete others, which are then not called.
    for (let entry = this.head; entry !== undefined; entry = this.head) {
      this.delete(entry);
      entry.listener();
    }
  }
}
