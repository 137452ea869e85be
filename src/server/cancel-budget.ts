import { constants, type Http2Session } from 'node:http2';

/**
 * HTTP/2 lets one connection open and cancel streams without end. A cancelled short request whose tunnel
 * could not be kept (its body was still coming, or its response beyond the drain bounds) costs an
 * HTTP/1.1 tunnel, and the next request a new dial through ANP, the agent and the service-proxy. Node's
 * reset-rate limit counts every RST_STREAM alike; this counts only the cancellations that cost a tunnel,
 * and sends GOAWAY (ENHANCE_YOUR_CALM) to a connection once they reach the budget. An HTTP/1.1 client
 * cancels by closing its connection, so it pays a TLS handshake of its own for every tunnel it costs.
 */
export class CancelBudget {
  private readonly spent = new WeakMap<Http2Session, number>();
  private readonly budget: number;
  private readonly onExhausted: (session: Http2Session) => void;

  constructor(budget: number, onExhausted: (session: Http2Session) => void) {
    this.budget = budget;
    this.onExhausted = onExhausted;
  }

  /** Records a tunnel lost to a cancellation on `session`; past the budget the connection is sent away. */
  tunnelLost(session: Http2Session | undefined): void {
    if (session === undefined || session.closed || session.destroyed) return;
    const n = (this.spent.get(session) ?? 0) + 1;
    this.spent.set(session, n);
    if (n < this.budget) return;
    this.onExhausted(session);
    session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM);
    session.close();
  }
}
