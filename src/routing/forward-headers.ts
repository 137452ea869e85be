import { isImpersonationHeader } from './identity-headers.ts';
import type { ServiceTarget } from './request-target.ts';

/**
 * Hop-by-hop headers (RFC 9110 section 7.6.1 and Go's ReverseProxy list). They describe one connection and are
 * never forwarded; the names a Connection header lists are dropped as well.
 */
const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // HTTP/2 upgrade token of h2c; meaningless past this hop.
  'http2-settings',
]);

const CLUSTER_PROXY_PREFIX = 'cluster-proxy-';

export interface ForwardRequestInput {
  /** Node's rawHeaders: name, value, name, value... with original case and duplicates. */
  rawHeaders: readonly string[];
  /** Address of the client socket, appended to X-Forwarded-For. */
  clientAddress: string | undefined;
  target: ServiceTarget;
  /** Keep `Connection: Upgrade` and `Upgrade` (byte-level upgrade pass-through). */
  upgrade?: string | undefined;
  /** Drop client Impersonate-* headers (`--impersonation=strip`). */
  stripImpersonation?: boolean;
}

/**
 * The header list sent upstream, as a flat [name, value, ...] array (undici takes it as is).
 * End-to-end headers pass with their case and order, Authorization included; Host is kept;
 * client-sent Cluster-Proxy-* headers are replaced by ours; X-Forwarded-For gets the client appended.
 * What the proxy sets itself (Cluster-Proxy-*, X-Forwarded-For, the upgrade's Connection and Upgrade) is
 * added after the client's list was filtered, so a client naming those in Connection drops only its own copies.
 * Cookie fields become one Cookie header joined with "; " (RFC 9113 section 8.2.3): HTTP/2 clients may
 * split cookies into many fields, and on an HTTP/1.1 hop a request carries one Cookie header (RFC 6265).
 */
export function buildUpstreamHeaders(input: ForwardRequestInput): string[] {
  const raw = input.rawHeaders;
  const listed = connectionListedNames(raw);
  const out: string[] = [];
  let forwardedFor: string | undefined;
  let host: string | undefined;
  let authority: string | undefined;
  let cookieName: string | undefined;
  let cookie = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    if (name.charCodeAt(0) === 0x3a) {
      // HTTP/2 pseudo-header; :authority stands in for Host.
      if (name === ':authority') authority = value;
      continue;
    }
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      // Go's ReverseProxy sends "TE: trailers" on when the client listed trailers (end-to-end support).
      if (lower === 'te' && /(^|,)\s*trailers\s*(;|,|$)/i.test(value)) out.push(name, 'trailers');
      continue;
    }
    // Host is never hop-by-hop, whatever Connection lists: the managed cluster sees the client's Host.
    if (listed !== undefined && listed.has(lower) && lower !== 'host') continue;
    if (lower.startsWith(CLUSTER_PROXY_PREFIX)) continue;
    if (input.stripImpersonation === true && isImpersonationHeader(lower)) continue;
    if (lower === 'x-forwarded-for') {
      forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
      continue;
    }
    if (lower === 'host') {
      // Admission answers two Host headers with 400 (identity-headers.ts); keep the first to be safe.
      if (host === undefined) {
        host = value;
        out.push(name, value);
      }
      continue;
    }
    // Expect: 100-continue was answered by Node on this hop; the upstream hop has its own.
    if (lower === 'expect') continue;
    if (lower === 'cookie') {
      cookieName ??= name;
      cookie = cookie === '' ? value : `${cookie}; ${value}`;
      continue;
    }
    out.push(name, value);
  }
  if (cookieName !== undefined) out.push(cookieName, cookie);
  if (host === undefined && authority !== undefined) out.push('host', authority);
  if (input.clientAddress !== undefined) {
    const client = stripIpv4Mapped(input.clientAddress);
    forwardedFor = forwardedFor === undefined ? client : `${forwardedFor}, ${client}`;
  }
  if (forwardedFor !== undefined) out.push('x-forwarded-for', forwardedFor);
  if (input.upgrade !== undefined) out.push('connection', 'Upgrade', 'upgrade', input.upgrade);
  const t = input.target;
  out.push(
    'cluster-proxy-proto', t.proto,
    'cluster-proxy-namespace', t.namespace,
    'cluster-proxy-service', t.service,
    'cluster-proxy-port', t.port,
  );
  return out;
}

/**
 * Response headers as undici hands them over: over HTTP/1.1 the raw list (Buffers or strings, duplicates
 * such as Set-Cookie in order), over HTTP/2 Node's header object (pseudo-headers already removed).
 */
export type UpstreamHeaders = readonly (Buffer | string)[] | Readonly<Record<string, string | string[] | undefined>>;

/** Response headers to relay to the client, as name/value pairs, without hop-by-hop headers. */
export function buildResponseHeaders(raw: UpstreamHeaders): string[] {
  const strings = headerPairs(raw);
  const listed = connectionListedNames(strings);
  const out: string[] = [];
  for (let i = 0; i < strings.length; i += 2) {
    const name = strings[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    if (listed !== undefined && listed.has(lower)) continue;
    out.push(name, strings[i + 1]!);
  }
  return out;
}

function headerPairs(raw: UpstreamHeaders): string[] {
  if (Array.isArray(raw)) {
    const strings: string[] = new Array(raw.length);
    for (let i = 0; i < raw.length; i++) strings[i] = raw[i]!.toString('latin1');
    return strings;
  }
  const pairs: string[] = [];
  for (const [name, value] of Object.entries(raw)) {
    if (value === undefined || name.startsWith(':')) continue;
    if (Array.isArray(value)) for (const v of value) pairs.push(name, v);
    else pairs.push(name, value);
  }
  return pairs;
}

/** Names listed in Connection headers (RFC 9110 section 7.6.1), lower-cased; undefined when there are none. */
function connectionListedNames(raw: readonly string[]): Set<string> | undefined {
  let names: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 10 || name.toLowerCase() !== 'connection') continue;
    for (const token of raw[i + 1]!.split(',')) {
      const t = token.trim().toLowerCase();
      if (t === '' || t === 'close' || t === 'keep-alive' || t === 'upgrade') continue;
      (names ??= new Set()).add(t);
    }
  }
  return names;
}

function stripIpv4Mapped(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
