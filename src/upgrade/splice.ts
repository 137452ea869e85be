import type { Duplex } from 'node:stream';

export type SpliceEnd =
  | 'client_closed'
  | 'upstream_closed'
  | 'client_error'
  | 'upstream_error'
  | 'client_stalled'
  | 'idle'
  | 'shutdown';

export interface SpliceResult {
  /** Bytes from the client to the upstream, and back. */
  bytesUp: number;
  bytesDown: number;
  /** What ended the session first. */
  end: SpliceEnd;
  error?: Error;
}

export interface SpliceOptions {
  /** Longest the client may leave upstream bytes unread before the session is cut; 0 disables. */
  clientStallTimeoutMs: number;
  /** No bytes either way for this long closes the session; 0 disables. */
  idleTimeoutMs: number;
  /** After one side closes, how long the other may take to flush what it was given. */
  lingerMs: number;
}

export interface Splice {
  readonly done: Promise<SpliceResult>;
  /** Ends both sides cleanly (drain): what was written is flushed, then both close. */
  close(): void;
}

/**
 * Joins two byte streams after an upgrade, without looking at what they carry (WebSocket frames, SPDY
 * frames). Backpressure holds in both directions. The first side to end, fail or reset ends the
 * other, as Go's ReverseProxy does: ANP cannot carry a half-close, so there is nothing to keep open.
 * A client that stops reading is cut off after clientStallTimeoutMs, because a paused tunnel stalls
 * every tunnel of its ANP agent.
 */
export function splice(client: Duplex, upstream: Duplex, opts: SpliceOptions): Splice {
  let bytesUp = 0;
  let bytesDown = 0;
  let ended: SpliceEnd | undefined;
  let firstError: Error | undefined;
  let stallTimer: NodeJS.Timeout | undefined;
  let idleTimer: NodeJS.Timeout | undefined;
  let lingerTimer: NodeJS.Timeout | undefined;
  let resolveDone!: (r: SpliceResult) => void;
  const done = new Promise<SpliceResult>((resolve) => {
    resolveDone = resolve;
  });
  let closedCount = 0;

  const touch = (): void => {
    if (opts.idleTimeoutMs > 0) idleTimer?.refresh();
  };

  const settle = (): void => {
    clearTimeout(stallTimer);
    clearTimeout(idleTimer);
    clearTimeout(lingerTimer);
    const result: SpliceResult = { bytesUp, bytesDown, end: ended ?? 'client_closed' };
    if (firstError !== undefined) result.error = firstError;
    resolveDone(result);
  };

  const onClosed = (): void => {
    if (++closedCount === 2) settle();
  };

  /** Ends both sides: `graceful` lets queued bytes flush first, within lingerMs. */
  const finish = (why: SpliceEnd, graceful: boolean, err?: Error): void => {
    if (ended !== undefined) {
      // A failure while flushing: nothing more will get through.
      if (err !== undefined) destroyBoth();
      return;
    }
    ended = why;
    firstError = err;
    clearTimeout(stallTimer);
    clearTimeout(idleTimer);
    if (!graceful) {
      destroyBoth();
      return;
    }
    client.end();
    upstream.end();
    lingerTimer = setTimeout(destroyBoth, opts.lingerMs);
    lingerTimer.unref();
  };

  const destroyBoth = (): void => {
    client.destroy();
    upstream.destroy();
  };

  // Once the session is ending, late bytes have nowhere to go (the other side was ended).
  client.on('data', (chunk: Buffer) => {
    if (ended !== undefined) return;
    bytesUp += chunk.length;
    touch();
    if (!upstream.write(chunk)) {
      client.pause();
      upstream.once('drain', () => client.resume());
    }
  });
  upstream.on('data', (chunk: Buffer) => {
    if (ended !== undefined) return;
    bytesDown += chunk.length;
    touch();
    if (!client.write(chunk)) {
      upstream.pause();
      if (opts.clientStallTimeoutMs > 0) {
        stallTimer = setTimeout(() => {
          finish('client_stalled', false, new Error(`client did not read the upgraded stream for ${opts.clientStallTimeoutMs} ms`));
        }, opts.clientStallTimeoutMs);
      }
      client.once('drain', () => {
        clearTimeout(stallTimer);
        upstream.resume();
      });
    }
  });

  client.on('end', () => finish('client_closed', true));
  upstream.on('end', () => finish('upstream_closed', true));
  client.on('error', (err: Error) => finish('client_error', false, err));
  upstream.on('error', (err: Error) => finish('upstream_error', false, err));
  // A close before any end or error is a destroy elsewhere; the other side must not linger. After a
  // clean end, the other side keeps flushing until it closes too or lingerMs passes.
  client.on('close', () => {
    onClosed();
    if (ended === undefined) finish('client_closed', false);
  });
  upstream.on('close', () => {
    onClosed();
    if (ended === undefined) finish('upstream_closed', false);
  });

  if (opts.idleTimeoutMs > 0) {
    idleTimer = setTimeout(() => finish('idle', true), opts.idleTimeoutMs);
    idleTimer.unref();
  }

  client.resume();
  upstream.resume();

  return {
    done,
    close: () => finish('shutdown', true),
  };
}
