import YAML from 'yaml';
import { isDns1123Label, isPortNumber } from './names.ts';
import type { ServiceTarget } from './request-target.ts';

/**
 * One Service reachable through `.../services/<svc>/proxy-service/` paths, as OCM's
 * `cluster-proxy-exposed-services` ConfigMap lists it (CVE-2026-66794): namespace and service required,
 * port and protocol optional (absent matches any).
 */
export interface ExposedService {
  namespace: string;
  service: string;
  port?: string;
  protocol?: 'http' | 'https';
}

const FIELDS = new Set(['namespace', 'service', 'port', 'protocol']);

/** The Services proxy-service paths may reach. Empty denies every one (default deny). */
export class ServiceAllowlist {
  readonly entries: readonly ExposedService[];

  constructor(entries: readonly ExposedService[] = []) {
    this.entries = entries;
  }

  allows(t: ServiceTarget): boolean {
    for (const e of this.entries) {
      if (e.namespace === t.namespace && e.service === t.service && (e.port === undefined || e.port === t.port) && (e.protocol === undefined || e.protocol === t.proto)) {
        return true;
      }
    }
    return false;
  }
}

/**
 * Parses an allowlist file. Two shapes are read:
 * - a list of entries: the value of one ConfigMap key, as a ConfigMap volume mounts it;
 * - a mapping of key -> such a list as a string: the ConfigMap's `data` (OCM reads every key).
 * Strict, as a list that silently lost an entry would be worse than the last good one: unknown or
 * repeated fields, a missing namespace or service, names that cannot be Kubernetes names, a port that is
 * not 1-65535, a protocol other than http or https, and YAML errors all throw, naming the entry.
 * An empty file is an empty list.
 */
export function parseExposedServices(text: string): ExposedService[] {
  const doc = parseYaml(text);
  if (doc === null || doc === undefined) return [];
  if (Array.isArray(doc)) return entries(doc, '');
  if (typeof doc === 'object') {
    const all: ExposedService[] = [];
    for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
      if (typeof value !== 'string') throw new Error(`key ${JSON.stringify(key)}: expected a string holding a YAML list (ConfigMap data), got ${kindOf(value)}`);
      let inner: unknown;
      try {
        inner = parseYaml(value);
      } catch (err) {
        throw new Error(`key ${JSON.stringify(key)}: ${(err as Error).message}`);
      }
      if (inner === null || inner === undefined) continue;
      if (!Array.isArray(inner)) throw new Error(`key ${JSON.stringify(key)}: expected a list of services, got ${kindOf(inner)}`);
      all.push(...entries(inner, `key ${JSON.stringify(key)}: `));
    }
    return all;
  }
  throw new Error(`expected a list of services, got ${kindOf(doc)}`);
}

function parseYaml(text: string): unknown {
  const doc = YAML.parseDocument(text, { uniqueKeys: true, strict: true, prettyErrors: false });
  const first = doc.errors[0];
  if (first !== undefined) throw new Error(`invalid YAML: ${first.message.split('\n')[0]}`);
  return doc.toJS({ maxAliasCount: 0 });
}

function entries(list: unknown[], where: string): ExposedService[] {
  return list.map((item, i) => entry(item, `${where}entry[${i}]`));
}

function entry(item: unknown, at: string): ExposedService {
  if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new Error(`${at}: expected a mapping with namespace and service, got ${kindOf(item)}`);
  const o = item as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!FIELDS.has(k)) throw new Error(`${at}: unknown field ${JSON.stringify(k)} (known: namespace, service, port, protocol)`);
  const name = (field: 'namespace' | 'service'): string => {
    const v = o[field];
    if (v === undefined || v === null || v === '') throw new Error(`${at}: ${field} is required`);
    if (typeof v !== 'string' || !isDns1123Label(v)) throw new Error(`${at}: ${field} ${JSON.stringify(v)} is not a lowercase RFC 1123 label`);
    return v;
  };
  const e: ExposedService = { namespace: name('namespace'), service: name('service') };
  const port = o.port;
  if (port !== undefined && port !== null && port !== '') {
    const p = typeof port === 'number' ? String(port) : port;
    if (typeof p !== 'string' || !isPortNumber(p)) throw new Error(`${at}: port ${JSON.stringify(port)} is not a port number (1-65535)`);
    e.port = p;
  }
  const protocol = o.protocol;
  if (protocol !== undefined && protocol !== null && protocol !== '') {
    if (protocol !== 'http' && protocol !== 'https') throw new Error(`${at}: protocol ${JSON.stringify(protocol)} must be http or https`);
    e.protocol = protocol;
  }
  return e;
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'a mapping' : `${typeof v} ${JSON.stringify(v)}`;
}
