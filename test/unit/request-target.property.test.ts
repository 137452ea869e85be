import fc from 'fast-check';
import { expect, test } from 'vitest';
import { ProxyError, type ProxyErrorCode } from '../../src/errors/proxy-error.ts';
import { KUBE_API_TARGET, parseRequestTarget, type Route, type ServiceTarget } from '../../src/routing/request-target.ts';

/**
 * Property: for any raw request target, parseRequestTarget either throws a 400 ProxyError or routes to
 * exactly the raw first segment as the cluster with the rest of the target, byte for byte and the query
 * untouched, as the upstream path. The expected result comes from a model written independently of the
 * parser (split on "/" and regular expressions from apimachinery's validation, where the parser scans char
 * codes), so a shortcut in either shows up as a disagreement.
 */

// apimachinery's dns1123LabelFmt and dns1123SubdomainFmt; length limits 63 and 253.
const LABEL = '[a-z0-9]([-a-z0-9]*[a-z0-9])?';
const SUBDOMAIN_RE = new RegExp(`^${LABEL}(\\.${LABEL})*$`);
const LABEL_RE = new RegExp(`^${LABEL}$`);
const isSubdomain = (s: string): boolean => s.length <= 253 && SUBDOMAIN_RE.test(s);
const isLabel = (s: string): boolean => s.length <= 63 && LABEL_RE.test(s);
// SplitSchemeNamePort, then a port 1-65535 without leading zeros.
const SERVICE_RE = /^(?:(https?):)?([^:]*):([1-9][0-9]{0,4})$/;

type Expected = { error: ProxyErrorCode } | { route: Omit<Route, 'upstreamPathname'> };

function model(raw: string): Expected {
  if (!raw.startsWith('/')) return { error: 'BAD_PATH' };
  const q = raw.indexOf('?');
  const pathname = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : raw.slice(q);
  const segments = pathname.split('/');
  // ['', cluster, ...rest]: fewer than three means there is no "/" after the cluster.
  if (segments.length < 3) return { error: 'BAD_PATH' };
  const cluster = segments[1]!;
  if (!isSubdomain(cluster)) return { error: 'INVALID_CLUSTER_NAME' };
  // Upstream's rule on the whole path: more than 9 segments and the 9th (index 8) is proxy-service.
  if (segments.length > 9 && segments[8] === 'proxy-service') {
    const namespace = segments[5]!;
    const m = SERVICE_RE.exec(segments[7]!);
    if (m === null || !isLabel(m[2]!) || !isLabel(namespace)) return { error: 'INVALID_SERVICE' };
    const target: ServiceTarget = { proto: m[1] === 'http' ? 'http' : 'https', namespace, service: m[2]!, port: m[3]! };
    if (Number(target.port) > 65535) return { error: 'INVALID_SERVICE' };
    return { route: { cluster, kind: 'service', upstreamPath: `/${segments.slice(9).join('/')}${query}`, target } };
  }
  return { route: { cluster, kind: 'kube', upstreamPath: `/${segments.slice(2).join('/')}${query}`, target: KUBE_API_TARGET } };
}

// --- generators: valid shapes, hostile segments and arbitrary text, mixed ---

const label = fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?$/);
const subdomain = fc.array(label, { minLength: 1, maxLength: 3 }).map((ls) => ls.join('.'));
/** Names around the length limits: a 63/64-character label, a 253/254-character subdomain. */
const longName = fc.constantFrom(63, 64, 252, 253, 254, 300).chain((n) => fc.constantFrom('a'.repeat(n), `${'a'.repeat(n - 2)}.b`.slice(0, n), `${'ab.'.repeat(n)}`.slice(0, n)));
/** Dot segments, encoded escapes of "/" and ".", double encoding, NUL, case, stray separators. */
const hostile = fc.constantFrom(
  '', '.', '..', '...', '%2e', '%2e%2e', '%2E%2E', '.%2e', '%2e.', '%252e%252e', '%2f', '%2F', '..%2f', '%252f', '..;', ';', ';x=1',
  '%00', '\u0000', '%', '%zz', ' ', '\t', '\\', '..\\', '@', '#', '#frag', ':', '~', '*', 'ä', '\u202e', '\r\n',
  'Cluster-A', 'CLUSTER', '-a', 'a-', 'a..b', '.a', 'a.', 'a_b', 'clu%73ter-a', 'cluster-a%2f..%2fcluster-b', 'cluster-a:443', 'cluster-a@evil',
  'api', 'v1', 'namespaces', 'services', 'proxy-service', 'proxy-service%2f', 'PROXY-SERVICE', 'default', 'kube-system',
  'echo:8443', 'http:plain:8080', 'https:echo:443', 'echo', 'echo:', ':8443', 'echo:0', 'echo:08', 'echo:65535', 'echo:65536', 'echo:99999',
  'ftp:echo:21', 'http:echo', 'a:b:c:d', 'Echo:80', 'echo.svc:80',
);
const segment = fc.oneof(
  { weight: 4, arbitrary: label },
  { weight: 4, arbitrary: hostile },
  { weight: 2, arbitrary: fc.webSegment() },
  { weight: 1, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 6 }) },
);
const cluster = fc.oneof({ weight: 4, arbitrary: subdomain }, { weight: 3, arbitrary: segment }, { weight: 1, arbitrary: longName });
/** Paths shaped like a service request, mostly well formed, with any of their segments possibly hostile. */
const mostly = <T,>(valid: fc.Arbitrary<T>, other: fc.Arbitrary<T>): fc.Arbitrary<T> => fc.oneof({ weight: 4, arbitrary: valid }, { weight: 1, arbitrary: other });
/** Namespace and service names: short labels, or names at and past the 63-character limit. */
const name = fc.oneof({ weight: 5, arbitrary: label }, { weight: 1, arbitrary: longName });
const serviceSegment = fc
  .tuple(fc.constantFrom('', '', 'http:', 'https:', 'ftp:'), name, fc.constantFrom(':1', ':443', ':8443', ':65535', ':65536', ':0', ':', ''))
  .map((p) => p.join(''));
const serviceRest = fc
  .tuple(
    mostly(fc.constant('api'), segment),
    mostly(fc.constant('v1'), segment),
    mostly(fc.constant('namespaces'), segment),
    mostly(name, segment),
    mostly(fc.constant('services'), segment),
    mostly(serviceSegment, segment),
    mostly(fc.constant('proxy-service'), segment),
    fc.array(segment, { maxLength: 4 }),
  )
  .map(([a, b, c, ns, d, svc, e, tail]) => [a, b, c, ns, d, svc, e, ...tail]);
const rest = fc.oneof(
  { weight: 3, arbitrary: fc.array(segment, { maxLength: 8 }) },
  { weight: 3, arbitrary: serviceRest },
  { weight: 1, arbitrary: fc.webPath().map((p) => p.split('/').slice(1)) },
);
const query = fc.oneof(
  { weight: 3, arbitrary: fc.constant('') },
  { weight: 2, arbitrary: fc.webQueryParameters().map((q) => `?${q}`) },
  { weight: 1, arbitrary: fc.array(fc.oneof(segment, fc.constantFrom('?', '/', '#', '&', '=')), { maxLength: 5 }).map((p) => `?${p.join('')}`) },
);
/** Mostly origin-form; also absolute-form, asterisk, a missing or doubled leading slash. */
const prefix = fc.oneof(
  { weight: 12, arbitrary: fc.constant('/') },
  { weight: 1, arbitrary: fc.constantFrom('', '//', 'http://evil.example/', 'https://127.0.0.1:9092/', '*', ' /', '\\', '%2f') },
);
const rawTarget = fc.oneof(
  { weight: 8, arbitrary: fc.tuple(prefix, cluster, fc.oneof({ weight: 9, arbitrary: rest }, { weight: 1, arbitrary: fc.constant(undefined) }), query).map(([p, c, r, q]) => `${p}${c}${r === undefined ? '' : `/${r.join('/')}`}${q}`) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
);

function parse(raw: string): { route: Route } | { error: ProxyError } {
  try {
    return { route: parseRequestTarget(raw) };
  } catch (err) {
    // Anything but a ProxyError escapes and fails the property.
    if (err instanceof ProxyError) return { error: err };
    throw err;
  }
}

/** A plain check: vitest's expect costs more than the parser, 100,000 times over. */
function check(ok: boolean, what: string, detail: unknown): void {
  if (!ok) throw new Error(`${what}: ${JSON.stringify(detail)}`);
}

const sameRoute = (a: Omit<Route, 'upstreamPathname'>, b: Route): boolean =>
  a.cluster === b.cluster && a.kind === b.kind && a.upstreamPath === b.upstreamPath && JSON.stringify(a.target) === JSON.stringify(b.target);

test('100,000 raw targets: a 400 ProxyError, or the raw cluster segment and the raw rest with the query untouched', () => {
  const seen = { error: 0, kube: 0, service: 0 };
  fc.assert(
    fc.property(rawTarget, (raw) => {
      const got = parse(raw);
      const want = model(raw);
      if ('error' in want) {
        check('error' in got && got.error.code === want.error, `expected ${want.error}`, got);
        const err = (got as { error: ProxyError }).error;
        check(err.statusCode === 400 && err.reason === 'BadRequest', 'a 400 BadRequest', err.code);
        // Client text in the message is cut at 128 characters.
        check(err.message.length < 500, 'a short message', err.message.length);
        seen.error++;
        return;
      }
      check('route' in got && sameRoute(want.route, got.route), 'the modelled route', { want: want.route, got });
      const route = (got as { route: Route }).route;
      seen[route.kind]++;
      const q = raw.indexOf('?');
      const rawQuery = q === -1 ? '' : raw.slice(q);
      // The cluster is the first raw segment; the upstream path is a raw suffix of the target (the rest,
      // or what follows proxy-service), and its query is exactly the client's.
      check(raw.startsWith(`/${route.cluster}/`), 'the first raw segment is the cluster', route);
      check(raw.endsWith(route.upstreamPath), 'the upstream path is a raw suffix', route);
      check(route.upstreamPath === route.upstreamPathname + rawQuery, 'the query untouched', route);
      check(route.upstreamPathname.startsWith('/') && !route.upstreamPathname.includes('?'), 'a pathname', route);
      if (route.kind === 'kube') check(`/${route.cluster}${route.upstreamPath}` === raw, 'kube: the rest is everything after the cluster', route);
    }),
    { numRuns: 100_000 },
  );
  // The generators reach every outcome often enough to mean something.
  expect(seen.error).toBeGreaterThan(20_000);
  expect(seen.kube).toBeGreaterThan(20_000);
  expect(seen.service).toBeGreaterThan(2_000);
}, 60_000);
