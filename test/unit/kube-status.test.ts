import { describe, expect, test } from 'vitest';
import { kubeStatusFor, renderStatusResponse } from '../../src/errors/kube-status.ts';
import { ProxyError } from '../../src/errors/proxy-error.ts';

describe('renderStatusResponse', () => {
  test('a 400 is a Kubernetes Status failure with the code and reason', () => {
    const res = renderStatusResponse(new ProxyError('BAD_PATH', 'request path must be /<cluster>/<path>'));
    expect(res.statusCode).toBe(400);
    expect(JSON.parse(res.body)).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'request path must be /<cluster>/<path>',
      reason: 'BadRequest',
      code: 400,
    });
    expect(res.headers).toEqual({
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(res.body)),
      'cache-control': 'no-store',
    });
  });

  test('a 503 AGENT_UNAVAILABLE carries Retry-After and details.retryAfterSeconds', () => {
    const err = new ProxyError('AGENT_UNAVAILABLE', 'no agent for cluster c1', { retryAfterSeconds: 5 });
    const res = renderStatusResponse(err, 'c1');
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
    const body = JSON.parse(res.body) as Record<string, unknown>;
    expect(body).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 503, reason: 'ServiceUnavailable' });
    expect(body['details']).toEqual({ name: 'c1', kind: 'managedclusters', retryAfterSeconds: 5 });
  });

  test('an error without retryAfterSeconds has no Retry-After header', () => {
    const res = renderStatusResponse(new ProxyError('AGENT_DIAL_TIMEOUT', 'dial timed out'), 'c1');
    expect(res.statusCode).toBe(504);
    expect(res.headers['retry-after']).toBeUndefined();
    expect(JSON.parse(res.body)).toMatchObject({ reason: 'Timeout', code: 504, details: { name: 'c1', kind: 'managedclusters' } });
  });

  test('without a cluster or retry time there are no details', () => {
    expect(kubeStatusFor(new ProxyError('UPSTREAM_FAILED', 'x')).details).toBeUndefined();
    expect(kubeStatusFor(new ProxyError('UPSTREAM_FAILED', 'x')).reason).toBe('BadGateway');
  });

  test('content-length counts bytes, not characters', () => {
    const res = renderStatusResponse(new ProxyError('INVALID_CLUSTER_NAME', 'invalid cluster name "\u00e9\u{1F600}"'));
    expect(res.headers['content-length']).toBe(String(Buffer.from(res.body, 'utf8').length));
    expect(Number(res.headers['content-length'])).toBeGreaterThan(res.body.length);
  });

  test.each([
    ['TOO_MANY_REQUESTS', 429, 'TooManyRequests'],
    ['CAPACITY_EXCEEDED', 503, 'ServiceUnavailable'],
    ['SHUTTING_DOWN', 503, 'ServiceUnavailable'],
    ['PROXY_UNREACHABLE', 502, 'BadGateway'],
    ['PROXY_CONNECT_TIMEOUT', 504, 'Timeout'],
    ['INVALID_SERVICE', 400, 'BadRequest'],
  ] as const)('%s renders as %i %s', (code, status, reason) => {
    const res = renderStatusResponse(new ProxyError(code, 'm'));
    expect(res.statusCode).toBe(status);
    expect(JSON.parse(res.body)).toMatchObject({ code: status, reason });
  });
});
