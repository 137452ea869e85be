import { describe, expect, test } from 'vitest';
import { buildResponseHeaders, buildUpstreamHeaders } from '../../src/routing/forward-headers.ts';
import { KUBE_API_TARGET, type ServiceTarget } from '../../src/routing/request-target.ts';

const TARGET: ServiceTarget = { proto: 'https', namespace: 'openshift-monitoring', service: 'prometheus-k8s', port: '9091' };
const TARGET_TAIL = [
  'cluster-proxy-proto', 'https',
  'cluster-proxy-namespace', 'openshift-monitoring',
  'cluster-proxy-service', 'prometheus-k8s',
  'cluster-proxy-port', '9091',
];

function upstream(rawHeaders: string[], clientAddress?: string, upgrade?: string): string[] {
  return buildUpstreamHeaders({ rawHeaders, clientAddress, target: TARGET, upgrade });
}

/** Pairs [name, value] of a flat header list. */
function pairs(flat: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i]!, flat[i + 1]!]);
  return out;
}

function names(flat: readonly string[]): string[] {
  return pairs(flat).map(([n]) => n.toLowerCase());
}

describe('buildUpstreamHeaders', () => {
  test('end-to-end headers pass with their case, order and duplicates, followed by the target headers', () => {
    const raw = [
      'Host', 'proxy.example:9092',
      'Authorization', 'Bearer abc',
      'Impersonate-User', 'alice',
      'Impersonate-Group', 'g1',
      'Impersonate-Group', 'g2',
      'Accept', 'application/json',
      'X-Custom', 'v',
    ];
    expect(upstream(raw)).toEqual([...raw, ...TARGET_TAIL]);
  });

  test.each([
    'Connection',
    'Keep-Alive',
    'Proxy-Connection',
    'Transfer-Encoding',
    'Upgrade',
    'Trailer',
    'Proxy-Authorization',
    'Proxy-Authenticate',
    'Http2-Settings',
    'KEEP-ALIVE',
    'transfer-encoding',
  ])('the hop-by-hop header %s is dropped', (name) => {
    const out = upstream(['Accept', '*/*', name, 'something', 'X-After', '1']);
    expect(out).toEqual(['Accept', '*/*', 'X-After', '1', ...TARGET_TAIL]);
  });

  test('TE is reduced to "trailers" when the client lists it, and dropped otherwise (as Go does)', () => {
    expect(upstream(['TE', 'trailers'])).toEqual(['TE', 'trailers', ...TARGET_TAIL]);
    expect(upstream(['te', ' Trailers '])).toEqual(['te', 'trailers', ...TARGET_TAIL]);
    expect(upstream(['TE', 'trailers, deflate'])).toEqual(['TE', 'trailers', ...TARGET_TAIL]);
    expect(upstream(['TE', 'deflate;q=0.5, trailers'])).toEqual(['TE', 'trailers', ...TARGET_TAIL]);
    expect(upstream(['TE', 'gzip'])).toEqual(TARGET_TAIL);
    expect(upstream(['TE', 'trailersx'])).toEqual(TARGET_TAIL);
  });

  test('Host survives even when a Connection header names it', () => {
    expect(upstream(['Host', 'user.example:9092', 'Connection', 'Host'])).toEqual(['Host', 'user.example:9092', ...TARGET_TAIL]);
  });

  test('headers named in Connection are dropped, in any case and across several Connection headers', () => {
    const out = upstream([
      'Connection', 'X-Secret, keep-alive',
      'X-Secret', 's',
      'connection', ' x-other ,close',
      'X-OTHER', 'o',
      'X-Kept', 'k',
    ]);
    expect(out).toEqual(['X-Kept', 'k', ...TARGET_TAIL]);
  });

  test('Connection cannot remove the target headers or the client address', () => {
    const out = upstream(['Connection', 'Cluster-Proxy-Service, X-Forwarded-For'], '10.0.0.1');
    expect(out).toEqual(['x-forwarded-for', '10.0.0.1', ...TARGET_TAIL]);
  });

  test('client-sent Cluster-Proxy-* headers are replaced by the four from the target', () => {
    const out = upstream([
      'Cluster-Proxy-Service', 'evil',
      'cluster-proxy-namespace', 'kube-system',
      'CLUSTER-PROXY-PORT', '1',
      'Cluster-Proxy-Proto', 'http',
      'Cluster-Proxy-Extra', 'x',
      'Accept', '*/*',
    ]);
    expect(out).toEqual(['Accept', '*/*', ...TARGET_TAIL]);
  });

  test('a kube request carries the kube-apiserver target', () => {
    const out = buildUpstreamHeaders({ rawHeaders: [], clientAddress: undefined, target: KUBE_API_TARGET });
    expect(out).toEqual([
      'cluster-proxy-proto', 'https',
      'cluster-proxy-namespace', 'default',
      'cluster-proxy-service', 'kubernetes',
      'cluster-proxy-port', '443',
    ]);
  });

  test('X-Forwarded-For values are joined and the client address appended', () => {
    const out = upstream(['X-Forwarded-For', '1.1.1.1', 'Accept', '*/*', 'x-forwarded-for', '2.2.2.2, 3.3.3.3'], '10.1.2.3');
    expect(out).toEqual(['Accept', '*/*', 'x-forwarded-for', '1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3', ...TARGET_TAIL]);
  });

  test('an IPv4-mapped IPv6 client address is written as plain IPv4', () => {
    expect(upstream([], '::ffff:1.2.3.4')).toEqual(['x-forwarded-for', '1.2.3.4', ...TARGET_TAIL]);
  });

  test('a real IPv6 client address is kept as is', () => {
    expect(upstream([], '2001:db8::1')).toEqual(['x-forwarded-for', '2001:db8::1', ...TARGET_TAIL]);
    expect(upstream([], '::ffff:abcd')).toEqual(['x-forwarded-for', '::ffff:abcd', ...TARGET_TAIL]);
  });

  test('without a client address the client X-Forwarded-For is still forwarded', () => {
    expect(upstream(['X-Forwarded-For', '1.1.1.1'])).toEqual(['x-forwarded-for', '1.1.1.1', ...TARGET_TAIL]);
  });

  test('without any address there is no X-Forwarded-For', () => {
    expect(names(upstream(['Accept', '*/*']))).not.toContain('x-forwarded-for');
  });

  test('Host is kept with its case and only the first of two is sent', () => {
    expect(upstream(['HOST', 'a.example', 'Host', 'b.example'])).toEqual(['HOST', 'a.example', ...TARGET_TAIL]);
  });

  test('HTTP/2 pseudo headers are dropped and :authority becomes host when there is no Host', () => {
    const out = upstream([':method', 'GET', ':path', '/c1/api', ':scheme', 'https', ':authority', 'proxy.example:9092', 'accept', '*/*']);
    expect(out).toEqual(['accept', '*/*', 'host', 'proxy.example:9092', ...TARGET_TAIL]);
  });

  test(':authority is ignored when a Host header is present', () => {
    const out = upstream([':authority', 'h2.example', 'host', 'h1.example']);
    expect(out).toEqual(['host', 'h1.example', ...TARGET_TAIL]);
  });

  test('Expect is dropped', () => {
    expect(upstream(['Expect', '100-continue', 'Content-Length', '3'])).toEqual(['Content-Length', '3', ...TARGET_TAIL]);
  });

  test('the upgrade option puts back Connection: Upgrade and the Upgrade protocol', () => {
    const out = upstream(['Connection', 'Upgrade', 'Upgrade', 'SPDY/3.1', 'X-Stream-Protocol-Version', 'v4.channel.k8s.io'], '10.0.0.9', 'SPDY/3.1');
    expect(out).toEqual([
      'X-Stream-Protocol-Version', 'v4.channel.k8s.io',
      'x-forwarded-for', '10.0.0.9',
      'connection', 'Upgrade',
      'upgrade', 'SPDY/3.1',
      ...TARGET_TAIL,
    ]);
  });

  test('without the upgrade option client Upgrade headers are dropped', () => {
    expect(names(upstream(['Connection', 'Upgrade', 'Upgrade', 'websocket']))).not.toContain('upgrade');
  });

  test('the input array is not modified', () => {
    const raw = ['Connection', 'X-A', 'X-A', '1', 'Host', 'h'];
    const copy = [...raw];
    upstream(raw, '1.2.3.4');
    expect(raw).toEqual(copy);
  });
});

describe('cookies', () => {
  test('cookie fields, as an HTTP/2 client may split them, become one Cookie header joined with "; "', () => {
    const out = upstream(['Cookie', 'a=1', 'X-A', '1', 'cookie', 'b=2; c=3']);
    expect(out.filter((_v, i, a) => i % 2 === 1 && a[i - 1]!.toLowerCase() === 'cookie')).toEqual(['a=1; b=2; c=3']);
    expect(out.slice(0, 4)).toEqual(['X-A', '1', 'Cookie', 'a=1; b=2; c=3']);
  });

  test('a single Cookie header passes unchanged', () => {
    expect(upstream(['cookie', 'session=x']).slice(0, 2)).toEqual(['cookie', 'session=x']);
  });
});

describe('buildResponseHeaders', () => {
  test('Buffers and strings become strings and duplicate Set-Cookie headers keep their order', () => {
    const out = buildResponseHeaders([
      Buffer.from('Content-Type'), Buffer.from('application/json'),
      'Set-Cookie', 'a=1',
      Buffer.from('Set-Cookie'), Buffer.from('b=2'),
      'Audit-Id', 'xyz',
    ]);
    expect(out).toEqual(['Content-Type', 'application/json', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'Audit-Id', 'xyz']);
  });

  test('hop-by-hop headers and the names Connection lists are dropped', () => {
    const out = buildResponseHeaders([
      'Connection', 'keep-alive, X-Hop',
      'Keep-Alive', 'timeout=5',
      'Transfer-Encoding', 'chunked',
      'X-Hop', 'h',
      'Proxy-Authenticate', 'Basic',
      'Trailer', 'X-T',
      'Upgrade', 'h2c',
      'Content-Length', '0',
    ]);
    expect(out).toEqual(['Content-Length', '0']);
  });

  test('an HTTP/2 header object becomes pairs: arrays expand in order, pseudo-headers are left out', () => {
    const out = buildResponseHeaders({ ':status': '200', 'content-type': 'application/json', 'set-cookie': ['a=1', 'b=2'], 'audit-id': 'xyz', 'x-none': undefined });
    expect(out).toEqual(['content-type', 'application/json', 'set-cookie', 'a=1', 'set-cookie', 'b=2', 'audit-id', 'xyz']);
  });

  test('TE is dropped from a response even when it says trailers', () => {
    expect(buildResponseHeaders(['TE', 'trailers', 'X-A', '1'])).toEqual(['X-A', '1']);
  });

  test('Buffers are decoded as latin1 so non-ASCII bytes survive one to one', () => {
    const out = buildResponseHeaders([Buffer.from('X-Name'), Buffer.from([0x63, 0x61, 0x66, 0xe9])]);
    expect(out).toEqual(['X-Name', 'caf\u00e9']);
    expect(Buffer.from(out[1]!, 'latin1')).toEqual(Buffer.from([0x63, 0x61, 0x66, 0xe9]));
  });

  test('an empty list gives an empty list', () => {
    expect(buildResponseHeaders([])).toEqual([]);
  });
});
