import net from 'node:net';

export interface RoundRobinBalancer {
  host: string;
  port: number;
  /** The backend index each accepted connection was sent to, in order of acceptance. */
  readonly assignments: readonly number[];
  /** Client connections currently open through the balancer. */
  readonly open: number;
  /** Stops listening and destroys every open connection, both sides. */
  close(): Promise<void>;
}

/**
 * A TCP load balancer on loopback, as a Kubernetes Service (kube-proxy) spreads connections over
 * replicas: each accepted connection goes to the next of `backendPorts` in turn, bytes are piped both
 * ways untouched (TLS and HTTP/2 pass through), half-closes are passed on, and when either side closes
 * or fails the other is destroyed. A backend that cannot be reached closes the client connection.
 */
export async function startRoundRobinBalancer(backendPorts: readonly number[], opts: { host?: string; port?: number; backendHost?: string } = {}): Promise<RoundRobinBalancer> {
  if (backendPorts.length === 0) throw new Error('a balancer needs at least one backend');
  const host = opts.host ?? '127.0.0.1';
  const backendHost = opts.backendHost ?? '127.0.0.1';
  const assignments: number[] = [];
  const sockets = new Set<net.Socket>();
  let next = 0;
  let open = 0;

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const index = next;
    next = (next + 1) % backendPorts.length;
    assignments.push(index);
    open++;
    const upstream = net.connect({ host: backendHost, port: backendPorts[index]!, allowHalfOpen: true, noDelay: true });
    sockets.add(client);
    sockets.add(upstream);
    let done = false;
    const teardown = (): void => {
      if (!done) {
        done = true;
        open--;
      }
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', teardown);
    upstream.on('error', teardown);
    client.once('close', teardown);
    upstream.once('close', teardown);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  return {
    host,
    port: (server.address() as net.AddressInfo).port,
    assignments,
    get open() {
      return open;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        sockets.clear();
      }),
  };
}
