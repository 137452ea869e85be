import { describe, expect, test } from 'vitest';
import { ProxyError, type ProxyErrorCode } from '../../src/errors/proxy-error.ts';
import { KUBE_API_TARGET, parseRequestTarget } from '../../src/routing/request-target.ts';

const SVC = '/c1/api/v1/namespaces/ns/services';

function errorOf(raw: string): ProxyError {
  try {
    parseRequestTarget(raw);
  } catch (err) {
    if (err instanceof ProxyError) return err;
    throw err;
  }
  throw new Error(`parseRequestTarget(${JSON.stringify(raw)}) did not throw`);
}

function expectCode(raw: string, code: ProxyErrorCode): ProxyError {
  const err = errorOf(raw);
  expect(err.code).toBe(code);
  expect(err.statusCode).toBe(400);
  expect(err.reason).toBe('BadRequest');
  return err;
}

describe('paths without a cluster and a rest', () => {
  test.each(['/', '/c1', '/c1?x=y', '/c1?x=/y'])('%s is rejected as BAD_PATH with status 400', (raw) => {
    expectCode(raw, 'BAD_PATH');
  });

  test('a request target that does not start with a slash is rejected as BAD_PATH', () => {
    expectCode('c1/api', 'BAD_PATH');
    expectCode('*', 'BAD_PATH');
    expectCode('', 'BAD_PATH');
  });

  test('the BAD_PATH message shows the usage and the offending path', () => {
    const err = expectCode('/c1', 'BAD_PATH');
    expect(err.message).toContain('/<cluster>/<path>');
    expect(err.message).toContain('"/c1"');
  });
});

describe('cluster names', () => {
  test.each([
    ['uppercase letters', '/Cluster1/api'],
    ['a percent-escape', '/%41bc/api'],
    ['an empty name', '//api/v1/pods'],
    ['254 characters', `/${'a'.repeat(127)}.${'b'.repeat(126)}/api`],
    ['a leading hyphen', '/-a/api'],
    ['a trailing hyphen', '/a-/api'],
    ['an underscore', '/a_b/api'],
    ['an empty label', '/a..b/api'],
    ['a trailing dot', '/a./api'],
  ])('a name with %s is rejected as INVALID_CLUSTER_NAME', (_why, raw) => {
    expectCode(raw, 'INVALID_CLUSTER_NAME');
  });

  test('the invalid-name message quotes the name', () => {
    expect(expectCode('/Bad/api', 'INVALID_CLUSTER_NAME').message).toContain('"Bad"');
  });

  test('an overlong invalid name is truncated in the message', () => {
    const name = `X${'a'.repeat(300)}`;
    const err = expectCode(`/${name}/api`, 'INVALID_CLUSTER_NAME');
    expect(err.message).not.toContain(name);
    expect(err.message).toContain('...');
  });

  test.each(['1-cluster', '0', 'local-cluster', 'a.b.c', 'x'.repeat(63)])('%s is a valid cluster name', (name) => {
    expect(parseRequestTarget(`/${name}/api`).cluster).toBe(name);
  });

  test('a 253-character dotted name is accepted', () => {
    const name = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
    expect(name.length).toBe(253);
    expect(parseRequestTarget(`/${name}/`).cluster).toBe(name);
  });
});

describe('kube-apiserver requests', () => {
  test('/c1/ goes to the upstream path / with the kube target', () => {
    const route = parseRequestTarget('/c1/');
    expect(route).toEqual({ cluster: 'c1', kind: 'kube', upstreamPath: '/', upstreamPathname: '/', target: KUBE_API_TARGET });
  });

  test('the kube target is https default/kubernetes:443', () => {
    expect(parseRequestTarget('/c1/api').target).toEqual({ proto: 'https', namespace: 'default', service: 'kubernetes', port: '443' });
  });

  test('percent-escapes and the query are kept byte for byte', () => {
    const rest =
      '/api/v1/namespaces/default/pods/a%2Fb/log?follow=true&x=%2F&labelSelector=app%3Dweb,tier+in+(a%2Cb)&sp=a%20b';
    const route = parseRequestTarget(`/c1${rest}`);
    expect(route.kind).toBe('kube');
    expect(route.upstreamPath).toBe(rest);
    expect(route.upstreamPathname).toBe('/api/v1/namespaces/default/pods/a%2Fb/log');
  });

  test('double slashes, dot segments and matrix parameters are not cleaned', () => {
    const rest = '/api//v1/../v1/./namespaces;x=1/default';
    expect(parseRequestTarget(`/c1${rest}`).upstreamPath).toBe(rest);
  });

  test('the query of a kube request is not part of upstreamPathname', () => {
    const route = parseRequestTarget('/c1/api/v1/pods?limit=1');
    expect(route.upstreamPath).toBe('/api/v1/pods?limit=1');
    expect(route.upstreamPathname).toBe('/api/v1/pods');
  });

  test('a question mark in the cluster position ends the path', () => {
    expectCode('/c1?x=/api', 'BAD_PATH');
  });
});

describe('service requests', () => {
  test('a prometheus query is routed to the service in its namespace', () => {
    const route = parseRequestTarget(
      '/c1/api/v1/namespaces/openshift-monitoring/services/prometheus-k8s:9091/proxy-service/api/v1/query?query=up',
    );
    expect(route).toEqual({
      cluster: 'c1',
      kind: 'service',
      upstreamPath: '/api/v1/query?query=up',
      upstreamPathname: '/api/v1/query',
      target: { proto: 'https', namespace: 'openshift-monitoring', service: 'prometheus-k8s', port: '9091' },
    });
  });

  test('a trailing slash after proxy-service gives the upstream path /', () => {
    const route = parseRequestTarget(`${SVC}/https:nginx:443/proxy-service/`);
    expect(route.kind).toBe('service');
    expect(route.upstreamPath).toBe('/');
    expect(route.target).toEqual({ proto: 'https', namespace: 'ns', service: 'nginx', port: '443' });
  });

  test('the http scheme is accepted and kept', () => {
    const route = parseRequestTarget(`${SVC}/http:plain:80/proxy-service/x`);
    expect(route.kind).toBe('service');
    expect(route.upstreamPath).toBe('/x');
    expect(route.target.proto).toBe('http');
    expect(route.target.service).toBe('plain');
    expect(route.target.port).toBe('80');
  });

  test('the rest of a service path keeps escapes, double slashes and the query', () => {
    const route = parseRequestTarget(`${SVC}/web:8080/proxy-service/a%2Fb//../c?q=%2F&x=a/b`);
    expect(route.upstreamPath).toBe('/a%2Fb//../c?q=%2F&x=a/b');
    expect(route.upstreamPathname).toBe('/a%2Fb//../c');
  });

  test('exactly nine segments ending in proxy-service is a kube request with the whole rest as path', () => {
    const route = parseRequestTarget(`${SVC}/https:nginx:443/proxy-service`);
    expect(route.kind).toBe('kube');
    expect(route.upstreamPath).toBe('/api/v1/namespaces/ns/services/https:nginx:443/proxy-service');
    expect(route.target).toEqual(KUBE_API_TARGET);
  });

  test('a query glued onto proxy-service makes a kube request', () => {
    const route = parseRequestTarget(`${SVC}/https:nginx:443/proxy-service?x=1`);
    expect(route.kind).toBe('kube');
    expect(route.upstreamPath).toBe('/api/v1/namespaces/ns/services/https:nginx:443/proxy-service?x=1');
  });

  test('a slash inside the query never makes a service request', () => {
    const route = parseRequestTarget(`${SVC}/https:nginx:443/proxy-service?x=/a/b`);
    expect(route.kind).toBe('kube');
    expect(route.upstreamPathname).toBe('/api/v1/namespaces/ns/services/https:nginx:443/proxy-service');
  });

  test('a slash-filled query after a short path stays a kube request', () => {
    const route = parseRequestTarget('/c1/api?a=/b/c/d/e/proxy-service/f/g/h');
    expect(route.kind).toBe('kube');
    expect(route.upstreamPath).toBe('/api?a=/b/c/d/e/proxy-service/f/g/h');
  });

  test('a different word in the proxy-service position makes a kube request', () => {
    expect(parseRequestTarget(`${SVC}/nginx:443/proxy/x`).kind).toBe('kube');
    expect(parseRequestTarget(`${SVC}/nginx:443/Proxy-Service/x`).kind).toBe('kube');
  });

  test('segments 2-4 and 6 are not checked, like upstream', () => {
    const route = parseRequestTarget('/c1/a/b/c/ns/d/nginx:443/proxy-service/x');
    expect(route.kind).toBe('service');
    expect(route.target).toEqual({ proto: 'https', namespace: 'ns', service: 'nginx', port: '443' });
  });

  test.each([
    ['four colon-separated parts', 'a:b:c:d'],
    ['an ftp scheme', 'ftp:x:1'],
    ['no port', 'svc'],
    ['an empty port', 'svc:'],
    ['port 0', 'svc:0'],
    ['a port above 65535', 'svc:99999'],
    ['a port with a leading zero', 'svc:080'],
    ['a named port', 'svc:https'],
    ['an uppercase name', 'Svc:80'],
    ['an empty name', ':80'],
    ['a dotted name', 'a.b:80'],
    ['an uppercase scheme', 'HTTPS:svc:443'],
    ['a percent-escaped name', '%73vc:80'],
  ])('a service segment with %s is rejected as INVALID_SERVICE', (_why, segment) => {
    expectCode(`${SVC}/${segment}/proxy-service/x`, 'INVALID_SERVICE');
  });

  test('an invalid namespace is rejected as INVALID_SERVICE', () => {
    const err = expectCode('/c1/api/v1/namespaces/Bad_NS/services/svc:80/proxy-service/x', 'INVALID_SERVICE');
    expect(err.message).toContain('"Bad_NS"');
  });

  test('an empty namespace is rejected as INVALID_SERVICE', () => {
    expectCode('/c1/api/v1/namespaces//services/svc:80/proxy-service/x', 'INVALID_SERVICE');
  });

  test('the INVALID_SERVICE message quotes the segment and says why', () => {
    const err = expectCode(`${SVC}/svc/proxy-service/x`, 'INVALID_SERVICE');
    expect(err.message).toContain('"svc"');
    expect(err.message).toContain('port is required');
  });

  test('port 65535 and port 1 are accepted', () => {
    expect(parseRequestTarget(`${SVC}/svc:65535/proxy-service/`).target.port).toBe('65535');
    expect(parseRequestTarget(`${SVC}/svc:1/proxy-service/`).target.port).toBe('1');
  });
});
