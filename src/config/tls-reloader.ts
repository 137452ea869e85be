import { watch, readFileSync, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type tls from 'node:tls';
import type { Logger } from 'pino';
import type { Metrics, TlsSource } from '../observability/metrics.ts';
import { ConfigError, settingLabel, type Config } from './config.ts';
import { buildProxyClient, buildServiceProxyTrust, buildServing, type Built, type ServingMaterial } from './tls-files.ts';
import type { SettingName } from './settings.ts';

/** Kubernetes replaces a Secret volume's files in several renames; one check after the burst is enough. */
const DEBOUNCE_MS = 200;

interface Source<T> {
  name: TlsSource;
  settings: SettingName[];
  files: string[];
  build: (contents: Buffer[]) => Built<T>;
  current: T;
  /** Contents last looked at, good or bad, so an unchanged bad state is reported once. */
  seen: Buffer[] | string;
}

export interface TlsReloaderOptions {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  /** Re-read every file this often even without a watch event (0: watch events only). */
  intervalMs: number;
}

/**
 * The certificate material of all three TLS hops, loaded at start and reloaded when its files change:
 * the serving certificate (rotated by the service CA), the ANP client certificate with its CA, and the
 * service-proxy CA. Each file's directory is watched (Kubernetes swaps a `..data` symlink there), with a
 * debounce and a periodic re-read as a fallback. A change is applied only when the whole set parses and
 * the key matches the certificate; otherwise the material in use stays, and the failure is logged and
 * counted. New connections and new tunnels use the new material; open ones keep theirs.
 */
export class TlsReloader {
  private readonly serving: Source<ServingMaterial>;
  private readonly proxyClient: Source<tls.SecureContext> | undefined;
  private readonly serviceProxy: Source<tls.SecureContext>;
  private readonly logger: Logger;
  private readonly metrics: Metrics;
  private readonly intervalMs: number;
  private watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;
  private onServing: ((m: ServingMaterial) => void) | undefined;

  /** Loads everything once; a problem throws a ConfigError naming the setting. */
  constructor(opts: TlsReloaderOptions) {
    const { config } = opts;
    this.logger = opts.logger;
    this.metrics = opts.metrics;
    this.intervalMs = opts.intervalMs;
    this.serving = initial({
      name: 'serving',
      settings: ['server-cert', 'server-key'],
      files: [config.server.certFile, config.server.keyFile],
      build: ([cert, key]) => buildServing(cert!, key!),
    }, this.metrics);
    if (config.proxy.transport === 'tcp') {
      this.proxyClient = initial({
        name: 'proxy_client',
        settings: ['proxy-ca-cert', 'proxy-cert', 'proxy-key'],
        files: [config.proxy.caFile, config.proxy.certFile, config.proxy.keyFile],
        build: ([ca, cert, key]) => buildProxyClient(ca!, cert!, key!),
      }, this.metrics);
    }
    this.serviceProxy = initial({
      name: 'service_proxy_ca',
      settings: ['service-proxy-ca-cert'],
      files: [config.serviceProxyCaFile],
      build: ([ca]) => buildServiceProxyTrust(ca!),
    }, this.metrics);
  }

  get servingMaterial(): ServingMaterial {
    return this.serving.current;
  }

  /** mTLS to the ANP proxy-server (undefined over a Unix socket); read at each dial. */
  readonly proxyContext = (): tls.SecureContext | undefined => this.proxyClient?.current;

  /** Trust for the service-proxy; read at each dial. */
  readonly serviceProxyContext = (): tls.SecureContext => this.serviceProxy.current;

  /** Starts watching; `onServing` applies a new serving certificate to the listening server. */
  start(onServing: (m: ServingMaterial) => void): void {
    this.onServing = onServing;
    const dirs = new Set(this.sources().flatMap((s) => s.files.map((f) => path.dirname(path.resolve(f)))));
    for (const dir of dirs) {
      try {
        const w = watch(dir, () => this.schedule());
        w.on('error', (err) => this.logger.warn({ dir, err }, 'certificate directory watch failed; relying on the periodic re-read'));
        this.watchers.push(w);
      } catch (err) {
        this.logger.warn({ dir, err }, 'cannot watch certificate directory; relying on the periodic re-read');
      }
    }
    if (this.intervalMs > 0) {
      this.poll = setInterval(() => this.check(), this.intervalMs);
      this.poll.unref();
    }
  }

  stop(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    clearTimeout(this.debounce);
    clearInterval(this.poll);
  }

  /** Re-reads every file now and applies what changed; returns once done (tests call it directly). */
  check(): void {
    for (const s of this.sources()) this.reload(s as Source<unknown>);
  }

  private schedule(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.check(), DEBOUNCE_MS);
    this.debounce.unref();
  }

  private sources(): Source<unknown>[] {
    const all: Source<unknown>[] = [this.serving as Source<unknown>];
    if (this.proxyClient !== undefined) all.push(this.proxyClient as Source<unknown>);
    all.push(this.serviceProxy as Source<unknown>);
    return all;
  }

  private reload(s: Source<unknown>): void {
    let contents: Buffer[];
    try {
      contents = s.files.map((f) => readFileSync(f));
    } catch (err) {
      const msg = (err as Error).message;
      if (s.seen === msg) return;
      s.seen = msg;
      this.failed(s, `cannot read: ${msg}`);
      return;
    }
    if (typeof s.seen !== 'string' && sameContents(s.seen, contents)) return;
    s.seen = contents;
    let built: Built<unknown>;
    try {
      built = s.build(contents);
      if (s.name === 'serving') this.onServing?.(built.value as ServingMaterial);
    } catch (err) {
      this.failed(s, (err as Error).message);
      return;
    }
    s.current = built.value;
    this.metrics.tlsReloaded(s.name, true);
    this.metrics.tlsCertificateInUse(s.name, built.notAfterSeconds);
    this.logger.info({ tls: s.name, files: s.files, notAfter: new Date(built.notAfterSeconds * 1000).toISOString() }, 'reloaded certificates; new connections use them');
  }

  private failed(s: Source<unknown>, why: string): void {
    this.metrics.tlsReloaded(s.name, false);
    this.logger.error({ tls: s.name, files: s.files, reason: why }, 'certificate reload failed; keeping the certificates in use');
  }
}

function initial<T>(spec: Omit<Source<T>, 'current' | 'seen'>, metrics: Metrics): Source<T> {
  let contents: Buffer[];
  let built: Built<T>;
  try {
    contents = spec.files.map((f) => readFileSync(f));
    built = spec.build(contents);
  } catch (err) {
    throw new ConfigError(`${spec.settings.map(settingLabel).join(', ')}: ${(err as Error).message}`);
  }
  metrics.tlsCertificateInUse(spec.name, built.notAfterSeconds);
  return { ...spec, current: built.value, seen: contents };
}

function sameContents(a: Buffer[], b: Buffer[]): boolean {
  return a.length === b.length && a.every((x, i) => x.equals(b[i]!));
}
