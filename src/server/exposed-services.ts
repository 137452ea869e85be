import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { ServiceAllowlist, parseExposedServices } from '../routing/service-allowlist.ts';

/** Kubernetes swaps a ConfigMap volume's `..data` symlink in several renames; one read after the burst is enough. */
const DEBOUNCE_MS = 200;

export interface ExposedServicesOptions {
  /** `--exposed-services-file`; undefined: no Service is reachable. */
  file: string | undefined;
  logger: Logger;
  /** Re-read this often even without a watch event (0: watch events only). */
  intervalMs: number;
}

/**
 * The service allowlist from `--exposed-services-file`, kept current as OCM keeps its ConfigMap informer:
 * a change that parses replaces the list; one that does not keeps the last good list and logs why; a
 * missing file (the ConfigMap deleted, or never created, with an optional volume) denies every Service.
 * The file's directory is watched (a ConfigMap volume swaps its `..data` symlink there), with a debounce,
 * and re-read every `intervalMs` in case an event is missed.
 */
export class ExposedServices {
  private list = new ServiceAllowlist();
  private readonly file: string | undefined;
  private readonly logger: Logger;
  private readonly intervalMs: number;
  /** Contents last looked at (or the read error), so an unchanged state is logged once. */
  private seen: string | undefined;
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private poll: NodeJS.Timeout | undefined;

  constructor(opts: ExposedServicesOptions) {
    this.file = opts.file;
    this.logger = opts.logger;
    this.intervalMs = opts.intervalMs;
    if (this.file === undefined) {
      this.logger.info('no --exposed-services-file: requests for a Service (.../proxy-service/...) are denied (403); kube-apiserver requests are not affected');
    } else {
      this.check();
    }
  }

  /** The list in force now. */
  get allowlist(): ServiceAllowlist {
    return this.list;
  }

  start(): void {
    if (this.file === undefined) return;
    const dir = path.dirname(path.resolve(this.file));
    try {
      this.watcher = watch(dir, () => this.schedule());
      this.watcher.on('error', (err) => this.logger.warn({ dir, err }, 'exposed-services directory watch failed; relying on the periodic re-read'));
    } catch (err) {
      this.logger.warn({ dir, err }, 'cannot watch the exposed-services directory; relying on the periodic re-read');
    }
    if (this.intervalMs > 0) {
      this.poll = setInterval(() => this.check(), this.intervalMs);
      this.poll.unref();
    }
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    clearTimeout(this.debounce);
    clearInterval(this.poll);
  }

  /** Re-reads the file now and applies it (tests call it directly). */
  check(): void {
    if (this.file === undefined) return;
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const state = `error:${code ?? (err as Error).message}`;
      if (this.seen === state) return;
      this.seen = state;
      this.list = new ServiceAllowlist();
      if (code === 'ENOENT') this.logger.warn({ file: this.file }, 'exposed-services file is missing: every Service request is denied (403) until it exists');
      else this.logger.error({ file: this.file, reason: (err as Error).message }, 'cannot read the exposed-services file: every Service request is denied (403)');
      return;
    }
    if (this.seen === text) return;
    this.seen = text;
    try {
      this.list = new ServiceAllowlist(parseExposedServices(text));
    } catch (err) {
      this.logger.error({ file: this.file, reason: (err as Error).message, entriesInUse: this.list.entries.length }, 'exposed-services file is invalid; keeping the list in use');
      return;
    }
    this.logger.info({ file: this.file, entries: this.list.entries.length }, 'loaded the exposed-services allowlist');
  }

  private schedule(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.check(), DEBOUNCE_MS);
    this.debounce.unref();
  }
}
